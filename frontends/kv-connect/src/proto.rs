//! The data-path messages, generated from `proto/datapath.proto`.
#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/com.deno.kv.datapath.rs"));
