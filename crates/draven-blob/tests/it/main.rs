//! The same behaviour on a local directory and on a real S3 server over HTTP.

use bytes::Bytes;
use draven_blob::testing::TestBlobs;
use draven_blob::{key, sha256_hex, BlobError};

async fn write_read_list_delete(t: TestBlobs) {
    let b = &t.blobs;
    let k = key(&[
        "tenants",
        "t1",
        "artifacts",
        "a1",
        "versions",
        "1",
        "payload",
    ]);
    let w = b
        .put(&k, Bytes::from_static(b"<definitions/>"))
        .await
        .unwrap();
    assert_eq!(w.sha256, sha256_hex(b"<definitions/>"));
    assert_eq!(w.size, 14);
    assert_eq!(
        b.get(&k).await.unwrap(),
        Bytes::from_static(b"<definitions/>")
    );
    assert_eq!(b.size(&k).await.unwrap(), Some(14));
    b.put("tenants/t1/other", Bytes::from_static(b"x"))
        .await
        .unwrap();
    b.put("tenants/t2/other", Bytes::from_static(b"y"))
        .await
        .unwrap();
    assert_eq!(
        b.list("tenants/t1").await.unwrap(),
        vec![k.clone(), "tenants/t1/other".to_string()]
    );
    b.delete(&k).await.unwrap();
    b.delete(&k).await.unwrap();
    assert!(matches!(b.get(&k).await, Err(BlobError::NotFound(_))));
    assert_eq!(b.size(&k).await.unwrap(), None);
}

async fn immutable_objects(t: TestBlobs) {
    let b = &t.blobs;
    let body = Bytes::from_static(b"bundle bytes");
    let k = format!("tenants/t1/bundles/{}.tar", sha256_hex(&body));
    b.put_immutable(&k, body.clone()).await.unwrap();
    b.put_immutable(&k, body.clone()).await.unwrap();
    assert!(matches!(
        b.put_immutable(&k, Bytes::from_static(b"other")).await,
        Err(BlobError::Immutable { .. })
    ));
    assert_eq!(b.get(&k).await.unwrap(), body);
}

async fn streams_large_objects(t: TestBlobs) {
    use futures::TryStreamExt;
    let b = &t.blobs;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    b.put("big", Bytes::from(big.clone())).await.unwrap();
    let (size, stream) = b.get_stream("big").await.unwrap();
    assert_eq!(size, big.len() as u64);
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), big);
}

async fn readiness_probe(t: TestBlobs) {
    assert!(t.blobs.probe().await.is_err());
    t.blobs.init_probe().await.unwrap();
    t.blobs.probe().await.unwrap();
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod local { $( #[tokio::test] async fn $name() { super::$name(draven_blob::testing::local()).await } )* }
        mod s3 { $( #[tokio::test] async fn $name() { if let Some(t) = draven_blob::testing::s3() { super::$name(t).await } } )* }
    };
}

on_both_stores!(
    write_read_list_delete,
    immutable_objects,
    streams_large_objects,
    readiness_probe
);

#[test]
fn locations() {
    use draven_blob::Location;
    assert_eq!(
        Location::parse("s3://b/p/q").unwrap(),
        Location::S3 {
            bucket: "b".into(),
            prefix: "p/q".into()
        }
    );
    assert_eq!(
        Location::parse("s3://b").unwrap(),
        Location::S3 {
            bucket: "b".into(),
            prefix: "".into()
        }
    );
    assert!(Location::parse("s3:///x").is_err());
    assert!(Location::parse("gs://b").is_err());
    assert_eq!(
        Location::parse("./data/objects").unwrap(),
        Location::Directory("./data/objects".into())
    );
}
