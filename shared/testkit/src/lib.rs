//! stub
pub mod client;
