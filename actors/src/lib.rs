//! grail-actors
