//! grail-protocol
