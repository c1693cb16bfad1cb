//! Group commit: concurrent commits that resolve cleanly share one backend write.
//!
//! The backend is wrapped (a [`Gate`]) so that every batch write takes a little longer and is
//! counted; commits that arrive while one write is in progress must share the next.

use std::time::Duration;

use strata_engine::{AtomicWrite, CommitOutcome, Engine, Value};

use crate::gate::Gate;
use crate::{cases, ensure, ensure_eq, u64_at, CaseResult, Harness, Step, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "group_commit",
        needs_persistence: false,
        needs_multi_writer: false,
        external: false,
        cases: cases![concurrent_commits_share_writes],
    }
}

async fn concurrent_commits_share_writes(h: &Harness) -> CaseResult {
    let gate = Gate::new();
    gate.slow_applies(Duration::from_millis(5));
    let engine = Engine::new(
        gate.wrap(h.backend()),
        strata_engine::EngineConfig {
            background_tasks: false,
            ..Harness::config()
        },
    );
    let db = engine.open_or_create("default").await.step("open")?;
    let before = gate.applies();
    let commits = 64u64;
    let mut handles = Vec::new();
    for i in 0..commits {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            db.atomic_write(AtomicWrite::new().set(i.to_be_bytes().to_vec(), Value::u64(i)))
                .await
        }));
    }
    let mut stamps = Vec::new();
    for h in handles {
        match h.await.map_err(|e| e.to_string())?.step("commit")? {
            CommitOutcome::Committed(vs) => stamps.push(vs),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    let writes = gate.applies() - before;
    ensure!(
        writes < commits as usize / 2,
        "{commits} concurrent commits took {writes} backend writes"
    );
    stamps.sort();
    stamps.dedup();
    ensure_eq!(stamps.len(), commits as usize);
    for i in 0..commits {
        ensure_eq!(u64_at(&db, &i.to_be_bytes()).await?, Some(i));
    }
    Ok(())
}
