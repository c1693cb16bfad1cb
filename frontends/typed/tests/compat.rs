//! Code at schema version N reading records written at N + 1: the data where version N + 1
//! was declared `compatible` (it stores the record in version N's form too), and otherwise a
//! typed error naming both versions. Real type changes, in both directions.

use std::time::Duration;

use strata_typed::{record, Error, RevisionState, Tree, Wait};

mod common;
use common::database;

mod v1 {
    use strata_typed::record;

    #[record(tree = "gauges", version = 1, versioned)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Gauge {
        pub name: String,
        pub max: u32,
    }
}

mod v2 {
    use strata_typed::record;

    /// Adds a unit; code at version 1 may read these records (without it).
    #[record(tree = "gauges", version = 2, versioned, previous = super::v1::Gauge, compatible)]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Gauge {
        pub name: String,
        pub max: u32,
        pub unit: String,
    }

    impl From<super::v1::Gauge> for Gauge {
        fn from(old: super::v1::Gauge) -> Self {
            Gauge {
                name: old.name,
                max: old.max,
                unit: String::new(),
            }
        }
    }

    impl From<&Gauge> for super::v1::Gauge {
        fn from(new: &Gauge) -> Self {
            super::v1::Gauge {
                name: new.name.clone(),
                max: new.max,
            }
        }
    }
}

/// Version 3 changes the range's meaning: not declared compatible.
#[record(tree = "gauges", version = 3, versioned, previous = v2::Gauge)]
#[derive(Debug, Clone, PartialEq)]
struct Gauge {
    name: String,
    range: (u32, u32),
    unit: String,
}

impl From<v2::Gauge> for Gauge {
    fn from(old: v2::Gauge) -> Self {
        Gauge {
            name: old.name,
            range: (0, old.max),
            unit: old.unit,
        }
    }
}

fn newer() -> v2::Gauge {
    v2::Gauge {
        name: "pressure".into(),
        max: 16,
        unit: "bar".into(),
    }
}

#[tokio::test]
async fn earlier_code_reads_what_later_compatible_code_wrote() {
    let db = database().await;
    let later = Tree::<v2::Gauge>::open(db.clone()).as_user("ann");
    let earlier = Tree::<v1::Gauge>::open(db.clone()).as_user("ann");
    let k = later.insert(&newer()).await.unwrap();
    let same = strata_typed::Key::<v1::Gauge>::new(k.id(), k.revision());
    assert_eq!(
        earlier.get(same).await.unwrap(),
        Some(v1::Gauge {
            name: "pressure".into(),
            max: 16
        })
    );
    assert_eq!(
        earlier.with(same, |g| g.max.to_native()).await.unwrap(),
        Some(16)
    );
    // Later code still reads its own form, whole.
    assert_eq!(later.get(k).await.unwrap(), Some(newer()));
    // Earlier code never writes over it: it would lose the unit.
    earlier
        .check_out(k.id(), Duration::from_secs(60), Wait::No)
        .await
        .unwrap();
    let err = earlier
        .update(
            same,
            &v1::Gauge {
                name: "p".into(),
                max: 1,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SchemaVersion {
                stored: 2,
                code: 1,
                ..
            }
        ),
        "{err}"
    );
    // Releasing keeps both forms.
    later.release(k).await.unwrap();
    assert_eq!(
        later.meta(k).await.unwrap().unwrap().state,
        RevisionState::Released
    );
    assert_eq!(earlier.get(same).await.unwrap().map(|g| g.max), Some(16));
    assert_eq!(later.get(k).await.unwrap(), Some(newer()));
}

#[tokio::test]
async fn a_change_not_declared_compatible_is_a_typed_error() {
    let db = database().await;
    let latest = Tree::<Gauge>::open(db.clone());
    let k = latest
        .insert(&Gauge {
            name: "flow".into(),
            range: (2, 40),
            unit: "l/min".into(),
        })
        .await
        .unwrap();
    for err in [
        Tree::<v2::Gauge>::open(db.clone())
            .get(strata_typed::Key::new(k.id(), k.revision()))
            .await
            .unwrap_err(),
        Tree::<v1::Gauge>::open(db.clone())
            .get(strata_typed::Key::new(k.id(), k.revision()))
            .await
            .unwrap_err(),
    ] {
        match err {
            Error::SchemaVersion {
                stored: 3, code, ..
            } => assert!(code < 3),
            other => panic!("expected a schema-version error, got {other}"),
        }
    }
    // And version 3 reads version 2's records (and so version 1's) through the chain.
    let v2k = Tree::<v2::Gauge>::open(db.clone())
        .insert(&newer())
        .await
        .unwrap();
    let up = latest
        .get(strata_typed::Key::new(v2k.id(), v2k.revision()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(up.range, (0, 16));
}
