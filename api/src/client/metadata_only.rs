//! `MetadataOnly<K>`: an object of kind `K` read for its metadata alone, as
//! upstream's metadata informers read `PartialObjectMetadata`. The garbage
//! collector follows ConfigMaps and Secrets only for their owners, uid and
//! finalizers; decoding and caching their data on every master cost CPU on
//! each write and memory for every byte of every Secret.
//!
//! Reading one skips every field but `metadata`. Its serialized form carries
//! `apiVersion`, `kind` and `metadata` only, so it must never be written
//! back whole (an update would erase the data): the API takes it for gets,
//! lists, watches, deletes and patches, as upstream's metadata client does.

use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The metadata of one object of kind `K`.
pub struct MetadataOnly<K> {
    pub metadata: ObjectMeta,
    kind: PhantomData<fn() -> K>,
}

impl<K> MetadataOnly<K> {
    pub fn new(metadata: ObjectMeta) -> Self {
        Self {
            metadata,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for MetadataOnly<K> {
    fn clone(&self) -> Self {
        Self::new(self.metadata.clone())
    }
}

impl<K: k8s_openapi::Resource> fmt::Debug for MetadataOnly<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataOnly")
            .field("kind", &K::KIND)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for MetadataOnly<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: k8s_openapi::Resource> k8s_openapi::Metadata for MetadataOnly<K> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K: k8s_openapi::Resource> Serialize for MetadataOnly<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct("MetadataOnly", 3)?;
        o.serialize_field("apiVersion", K::API_VERSION)?;
        o.serialize_field("kind", K::KIND)?;
        o.serialize_field("metadata", &self.metadata)?;
        o.end()
    }
}

impl<'de, K> Deserialize<'de> for MetadataOnly<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The one field read; serde skips the others without building them.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        Ok(Self::new(Wire::deserialize(d)?.metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::Resource as _;
    use serde_json::json;

    #[test]
    fn reads_the_metadata_and_skips_the_rest() {
        let wire = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u1",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u0"}]},
            "data": {"k": "dmFsdWU="}, "type": "Opaque", "unknown": [1, {"x": null}]
        });
        let m: MetadataOnly<Secret> = serde_json::from_value(wire).unwrap();
        assert_eq!(m.metadata.name.as_deref(), Some("s"));
        assert_eq!(m.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(m.metadata.owner_references.as_ref().unwrap()[0].uid, "u0");
    }

    #[test]
    fn keeps_the_kinds_identity_and_writes_no_data() {
        assert_eq!(MetadataOnly::<Secret>::KIND, "Secret");
        assert_eq!(MetadataOnly::<Secret>::URL_PATH_SEGMENT, "secrets");
        let m = MetadataOnly::<Secret>::new(ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
        );
    }
}
