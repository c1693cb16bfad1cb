//! The OLTP fast path: point statements that skip DataFusion planning.

use datafusion::sql::sqlparser::ast::Statement;

use crate::error::Result;
use crate::session::{Output, Session};
use crate::types::Datum;

/// A point SELECT answered without planning, or `None` to plan it.
pub async fn select(
    _s: &mut Session,
    _stmt: &Statement,
    _params: &[Datum],
) -> Result<Option<Output>> {
    Ok(None)
}
