//! grail-envs
