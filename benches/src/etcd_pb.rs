//! Generated from `proto/etcd.proto`: the part of etcd's v3 API the benches use.

#![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]

tonic::include_proto!("etcdserverpb");
