//! A Raft RPC's request (`RaftRequest` in `peer.proto`), serialized straight
//! into tonic's send buffer. The generated client would need the payload
//! encoded into a buffer of its own first, then copy it into tonic's, which
//! starts at 8 KiB and is grown to the message's size at every call: two
//! fresh allocations of up to `APPEND_BYTES` per AppendEntries. Zeroing the
//! pages behind them was about 30% of the leader's raft thread in the
//! scheduler benchmark's profile. Here the message's size is counted first,
//! tonic's buffer is made that size, and the payload is written into it
//! once. The bytes on the wire are the generated code's.

use std::marker::PhantomData;

use balsa_proto::peer::{RaftKind, RaftReply};
use bytes::BufMut;
use prost::encoding::{self, WireType};
use serde::Serialize;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

use crate::codec::{self, CodecError};

/// `RaftRequest`'s field numbers.
const VERSION: u32 = 1;
const FROM: u32 = 2;
const KIND: u32 = 3;
const PAYLOAD: u32 = 4;
const CLUSTER_ID: u32 = 5;

/// One `RaftRequest`: its small fields already encoded as prost writes them
/// (in field order, proto3 defaults left out), the payload still a typed
/// value, written only into the send buffer.
pub struct RaftCall<Req> {
    /// Fields 1-3: version, from, kind.
    head: Vec<u8>,
    req: Req,
    /// `codec::encoded_len(req)`; never 0 (the format marker).
    payload: usize,
    /// Field 5: cluster_id.
    tail: Vec<u8>,
}

impl<Req: Serialize> RaftCall<Req> {
    pub fn new(
        version: u32,
        from: u64,
        kind: RaftKind,
        cluster_id: String,
        req: Req,
    ) -> Result<Self, CodecError> {
        let mut head = Vec::new();
        if version != 0 {
            encoding::uint32::encode(VERSION, &version, &mut head);
        }
        if from != 0 {
            encoding::uint64::encode(FROM, &from, &mut head);
        }
        if kind as i32 != 0 {
            encoding::int32::encode(KIND, &(kind as i32), &mut head);
        }
        let mut tail = Vec::new();
        if !cluster_id.is_empty() {
            encoding::string::encode(CLUSTER_ID, &cluster_id, &mut tail);
        }
        Ok(Self {
            head,
            payload: codec::encoded_len(&req)?,
            req,
            tail,
        })
    }

    /// The encoded message's length.
    fn len(&self) -> usize {
        self.head.len()
            + encoding::key_len(PAYLOAD)
            + encoding::encoded_len_varint(self.payload as u64)
            + self.payload
            + self.tail.len()
    }

    fn write(&self, buf: &mut impl BufMut) -> Result<(), CodecError> {
        buf.put_slice(&self.head);
        encoding::encode_key(PAYLOAD, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.payload as u64, buf);
        codec::encode_to(&self.req, &mut buf.writer())?;
        buf.put_slice(&self.tail);
        Ok(())
    }

    /// The codec for sending this call: its buffer holds the whole message
    /// (and the 5-byte gRPC frame header) without growing.
    pub fn codec(&self) -> RaftCodec<Req> {
        RaftCodec {
            buffer: self.len() + 5,
            req: PhantomData,
        }
    }
}

pub struct RaftCodec<Req> {
    buffer: usize,
    req: PhantomData<fn(Req)>,
}

impl<Req: Serialize + Send + 'static> Codec for RaftCodec<Req> {
    type Encode = RaftCall<Req>;
    type Decode = RaftReply;
    type Encoder = RaftEncoder<Req>;
    type Decoder = ProstDecoder<RaftReply>;

    fn encoder(&mut self) -> Self::Encoder {
        RaftEncoder {
            buffer: self.buffer,
            req: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

pub struct RaftEncoder<Req> {
    buffer: usize,
    req: PhantomData<fn(Req)>,
}

impl<Req: Serialize> Encoder for RaftEncoder<Req> {
    type Item = RaftCall<Req>;
    type Error = Status;

    fn encode(&mut self, call: RaftCall<Req>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        call.write(dst)
            .map_err(|e| Status::internal(format!("raft payload: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.buffer, self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use balsa_proto::peer::RaftRequest;
    use prost::Message;

    use super::*;

    /// A peer that decodes with the generated code reads every field, and
    /// the payload is the codec's bytes: older and newer members talk.
    #[test]
    fn the_message_is_the_generated_codes() {
        let big = (vec![7u8; 70_000], "entries", 12u64);
        for (from, kind, cluster_id, req) in [
            (2, RaftKind::AppendEntries, "c-1", big.clone()),
            (9, RaftKind::Vote, "", (vec![], "", 0)),
            (0, RaftKind::InstallSnapshot, "c-1", big),
        ] {
            let call = RaftCall::new(3, from, kind, cluster_id.to_string(), req).unwrap();
            let mut out = Vec::new();
            call.write(&mut out).unwrap();
            assert_eq!(out.len(), call.len());
            let expected = RaftRequest {
                version: 3,
                from,
                kind: kind as i32,
                payload: codec::encode(&call.req).unwrap().into(),
                cluster_id: cluster_id.to_string(),
            };
            assert_eq!(out, expected.encode_to_vec(), "{kind:?}");
            assert_eq!(RaftRequest::decode(&out[..]).unwrap(), expected);
        }
    }
}
