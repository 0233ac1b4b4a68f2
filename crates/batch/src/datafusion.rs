//! The second back end: the plan as SQL ([`crate::sql::to_sql`]) on DataFusion.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use ::datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use ::datafusion::arrow::compute::cast;
use ::datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt32Type};
use ::datafusion::common::ScalarValue;
use ::datafusion::error::DataFusionError;
use ::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use ::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use portrait_tags::eval::TagColumn;
use portrait_tags::ir::{AggFunc, Column, Plan};
use portrait_tags::value::{Type, Value};

use crate::error::BatchError;
use crate::json;
use crate::kernel::{read_profile_map, Aggregated};
use crate::sql::{tags_sql, to_sql, Dialect};

/// What a JSON UDF converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum JsonKind {
    Num,
    Str,
    Bool,
    Time,
}

/// `json_num(text, 'a.b')` and friends: the property at a dotted path, converted with the
/// rules of [`crate::json`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonUdf {
    kind: JsonKind,
    signature: Signature,
}

impl JsonUdf {
    fn new(kind: JsonKind) -> Self {
        JsonUdf {
            kind,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonUdf {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        match self.kind {
            JsonKind::Num => "json_num",
            JsonKind::Str => "json_str",
            JsonKind::Bool => "json_bool",
            JsonKind::Time => "json_time",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(match self.kind {
            JsonKind::Num => DataType::Float64,
            JsonKind::Str => DataType::Utf8,
            JsonKind::Bool => DataType::Boolean,
            JsonKind::Time => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue, DataFusionError> {
        let n = args.number_rows;
        let [text, path] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes 2 arguments",
                self.name()
            )));
        };
        let path: Vec<String> = match path {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)),
            ) => p.split('.').map(str::to_string).collect(),
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{}: the path must be a string literal",
                    self.name()
                )))
            }
        };
        let text = cast(&text.to_array(n)?, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let raw = |i: usize| -> Option<&str> {
            if text.is_null(i) {
                return None;
            }
            json::lookup(text.value(i), &path)
        };
        let out: ArrayRef = match self.kind {
            JsonKind::Num => Arc::new(
                (0..text.len())
                    .map(|i| raw(i).and_then(json::to_num))
                    .collect::<Float64Array>(),
            ),
            JsonKind::Str => Arc::new(
                (0..text.len())
                    .map(|i| raw(i).and_then(json::to_str))
                    .collect::<StringArray>(),
            ),
            JsonKind::Bool => Arc::new(
                (0..text.len())
                    .map(|i| raw(i).and_then(json::to_bool))
                    .collect::<BooleanArray>(),
            ),
            JsonKind::Time => Arc::new(
                (0..text.len())
                    .map(|i| raw(i).and_then(json::to_time))
                    .collect::<Int64Array>(),
            ),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Registers `json_num`, `json_str`, `json_bool` and `json_time` on `ctx`.
pub fn register_json_udfs(ctx: &SessionContext) {
    for k in [JsonKind::Num, JsonKind::Str, JsonKind::Bool, JsonKind::Time] {
        ctx.register_udf(ScalarUDF::new_from_impl(JsonUdf::new(k)));
    }
}

/// Registers the lake at `lake_dir` on `ctx`: `events` (a listing table over `events/` with the
/// hive partition column `date`) and `profile_map`.
pub async fn register_lake(ctx: &SessionContext, lake_dir: &Path) -> Result<(), BatchError> {
    let events = format!("{}/", lake_dir.join("events").display());
    let schema = portrait_lake::event_schema();
    let opts = ParquetReadOptions::default()
        .table_partition_cols(vec![("date".to_string(), DataType::Utf8)])
        .schema(&schema);
    ctx.register_parquet("events", &events, opts).await?;
    let map = lake_dir.join("profile_map.parquet");
    ctx.register_parquet(
        "profile_map",
        &map.display().to_string(),
        ParquetReadOptions::default(),
    )
    .await?;
    Ok(())
}

/// The result column of a slot with nothing aggregated yet, `n` ids long.
pub(crate) fn empty_result(func: AggFunc, ty: Type, n: usize) -> Column {
    match func {
        AggFunc::Count | AggFunc::Sum | AggFunc::CountDistinct => Column::Num(vec![0.0; n]),
        AggFunc::Avg => Column::Num(vec![f64::NAN; n]),
        AggFunc::FirstTime | AggFunc::LastTime => Column::Time(vec![i64::MIN; n]),
        _ => match ty {
            Type::Str => Column::Str(vec![None; n]),
            Type::Time => Column::Time(vec![i64::MIN; n]),
            Type::Bool => Column::Bool(vec![None; n]),
            Type::Number | Type::Null => Column::Num(vec![f64::NAN; n]),
        },
    }
}

fn fill(col: &mut Column, ids: &[Option<u32>], arr: &ArrayRef) -> Result<(), BatchError> {
    match col {
        Column::Num(v) => {
            let a = cast(arr, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            for (r, id) in ids.iter().enumerate() {
                if let (Some(id), true) = (id, a.is_valid(r)) {
                    if let Some(slot) = v.get_mut(*id as usize) {
                        *slot = a.value(r);
                    }
                }
            }
        }
        Column::Time(v) => {
            let a = cast(arr, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            for (r, id) in ids.iter().enumerate() {
                if let (Some(id), true) = (id, a.is_valid(r)) {
                    if let Some(slot) = v.get_mut(*id as usize) {
                        *slot = a.value(r);
                    }
                }
            }
        }
        Column::Str(v) => {
            let a = cast(arr, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            for (r, id) in ids.iter().enumerate() {
                if let (Some(id), true) = (id, a.is_valid(r)) {
                    if let Some(slot) = v.get_mut(*id as usize) {
                        *slot = Some(Arc::from(a.value(r)));
                    }
                }
            }
        }
        Column::Bool(v) => {
            let a = cast(arr, &DataType::Boolean)?;
            let a = a.as_boolean();
            for (r, id) in ids.iter().enumerate() {
                if let (Some(id), true) = (id, a.is_valid(r)) {
                    if let Some(slot) = v.get_mut(*id as usize) {
                        *slot = Some(a.value(r));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Converts the result batches of [`to_sql`] (`id`, `a0`, `a1`, …) into columns.
pub fn batches_to_columns(
    plan: &Plan,
    batches: &[RecordBatch],
    n: usize,
) -> Result<Vec<Column>, BatchError> {
    let mut cols: Vec<Column> = plan
        .aggregates
        .iter()
        .map(|a| empty_result(a.func, a.result_type(), n))
        .collect();
    for b in batches {
        let id = b
            .column_by_name("id")
            .ok_or_else(|| BatchError::InvalidLake("result without an id column".into()))?;
        let id = cast(id, &DataType::UInt32)?;
        let id = id.as_primitive::<UInt32Type>();
        let ids: Vec<Option<u32>> = (0..id.len())
            .map(|i| id.is_valid(i).then(|| id.value(i)))
            .collect();
        for (i, col) in cols.iter_mut().enumerate() {
            let arr = b
                .column_by_name(&format!("a{i}"))
                .ok_or_else(|| BatchError::InvalidLake(format!("result without column a{i}")))?;
            fill(col, &ids, arr)?;
        }
    }
    Ok(cols)
}

/// Computes the plan's aggregates with DataFusion (`target_partitions = 2`) over the lake.
/// Gives the same [`Aggregated`] columns as [`crate::kernel::aggregate`]; `events_scanned` and
/// `files_scanned` are 0 (DataFusion does not report them here).
pub fn aggregate_sql(
    lake_dir: &Path,
    plan: &Plan,
    as_of_ms: i64,
) -> Result<Aggregated, BatchError> {
    let sql = to_sql(plan, as_of_ms, Dialect::DataFusion)?;
    let map = read_profile_map(lake_dir)?;
    let n = map.survivor.len();
    let has_events = lake_dir.join("events").is_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BatchError::io(lake_dir, e))?;
    let batches = if has_events && !plan.aggregates.is_empty() {
        rt.block_on(async {
            let config = SessionConfig::new().with_target_partitions(2);
            let ctx = SessionContext::new_with_config(config);
            register_json_udfs(&ctx);
            register_lake(&ctx, lake_dir).await?;
            let df = ctx.sql(&sql).await?;
            Ok::<_, BatchError>(df.collect().await?)
        })?
    } else {
        Vec::new()
    };
    Ok(Aggregated {
        columns: batches_to_columns(plan, &batches, n)?,
        live: map.live,
        id_space: n,
        events_scanned: 0,
        files_scanned: 0,
    })
}

/// Tag values computed by [`tags_sql_datafusion`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqlTags {
    /// The live profile ids, ascending.
    pub ids: Vec<u32>,
    /// One column per tag of the plan, in plan order; `values[r]` belongs to `ids[r]`.
    pub columns: Vec<TagColumn>,
}

/// Converts row `r` of a result column to a [`Value`] of type `ty`.
fn to_values(arr: &ArrayRef, ty: Type) -> Result<Vec<Value>, BatchError> {
    let n = arr.len();
    Ok(match ty {
        Type::Bool => {
            let a = cast(arr, &DataType::Boolean)?;
            let a = a.as_boolean();
            (0..n)
                .map(|r| {
                    if a.is_valid(r) {
                        Value::Bool(a.value(r))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        Type::Number => {
            let a = cast(arr, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            (0..n)
                .map(|r| {
                    if a.is_valid(r) && !a.value(r).is_nan() {
                        Value::Num(a.value(r))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        Type::Time => {
            let a = cast(arr, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            (0..n)
                .map(|r| {
                    if a.is_valid(r) {
                        Value::Time(a.value(r))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        Type::Str => {
            let a = cast(arr, &DataType::Utf8)?;
            let a = a.as_string::<i32>();
            (0..n)
                .map(|r| {
                    if a.is_valid(r) {
                        Value::Str(Arc::from(a.value(r)))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        Type::Null => vec![Value::Null; n],
    })
}

/// Computes every tag of `plan` with DataFusion (`target_partitions = 2`) running
/// [`tags_sql`] over the lake: one row per live profile, as `portrait_tags::eval::evaluate_population`
/// gives over the kernel's aggregates.
pub fn tags_sql_datafusion(
    lake_dir: &Path,
    plan: &Plan,
    as_of_ms: i64,
) -> Result<SqlTags, BatchError> {
    let sql = tags_sql(plan, as_of_ms, Dialect::DataFusion)?;
    if !lake_dir.join("events").is_dir() {
        return Err(BatchError::InvalidLake(format!(
            "{}: no events directory",
            lake_dir.display()
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BatchError::io(lake_dir, e))?;
    let batches = rt.block_on(async {
        let config = SessionConfig::new().with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        register_json_udfs(&ctx);
        register_lake(&ctx, lake_dir).await?;
        let df = ctx.sql(&sql).await?;
        Ok::<_, BatchError>(df.collect().await?)
    })?;
    let mut ids = Vec::new();
    let mut columns: Vec<TagColumn> = plan
        .tags
        .iter()
        .map(|t| TagColumn {
            name: t.name.clone(),
            values: Vec::new(),
        })
        .collect();
    for b in &batches {
        let id = b
            .column_by_name("id")
            .ok_or_else(|| BatchError::InvalidLake("result without an id column".into()))?;
        let id = cast(id, &DataType::UInt32)?;
        let id = id.as_primitive::<UInt32Type>();
        for r in 0..id.len() {
            if id.is_null(r) {
                return Err(BatchError::InvalidLake("a null id in the result".into()));
            }
            ids.push(id.value(r));
        }
        for (i, (col, tag)) in columns.iter_mut().zip(&plan.tags).enumerate() {
            let arr = b.columns().get(i + 1).ok_or_else(|| {
                BatchError::InvalidLake(format!("result without the column of tag {}", tag.name))
            })?;
            col.values.extend(to_values(arr, tag.value_type)?);
        }
    }
    Ok(SqlTags { ids, columns })
}
