//! grail-messages
