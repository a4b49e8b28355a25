//! Reading the table's stream through the DynamoDB Streams API and shaping each record as
//! Lambda delivers it to the revoke function, for the local runner and the tests (feature
//! `local`). The emulator leaves `userIdentity` out of its records; the caller says which
//! REMOVE records were TTL deletions, and those get the identity AWS gives them.
//!
//! Each poll reads every shard from its start and skips the event ids it has already returned.
//! That is deliberate: the emulator restores a whole-table snapshot when a transaction is
//! cancelled, stream included, so records vanish and sequence numbers are reused, and an
//! iterator kept from one poll to the next can point past what is there. Local streams are
//! small; reading them whole is cheap and always right.

use std::collections::{HashMap, HashSet};

use aws_config::SdkConfig;
use aws_lambda_events::event::dynamodb::{EventRecord, UserIdentity};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};

#[derive(Debug, thiserror::Error)]
#[error("reading the table's stream: {0}")]
pub struct StreamError(String);

fn err(e: impl std::fmt::Debug) -> StreamError {
    StreamError(format!("{e:?}"))
}

const MAX_PAGES_PER_POLL: usize = 100;

/// Follows every shard of a table's stream from its start, remembering where it got to.
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Event ids already returned.
    seen: HashSet<String>,
}

impl StreamReader {
    pub async fn open(sdk: &SdkConfig, table: &str) -> Result<Self, StreamError> {
        let table = aws_sdk_dynamodb::Client::new(sdk)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(err)?;
        let arn = table
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| StreamError("the table has no stream".into()))?
            .to_owned();
        Ok(Self {
            client: aws_sdk_dynamodbstreams::Client::new(sdk),
            arn,
            seen: HashSet::new(),
        })
    }

    /// Skips what the stream already holds: the next poll returns only newer records.
    pub async fn skip_existing(&mut self) -> Result<(), StreamError> {
        let existing = self.read_all().await?;
        self.seen.extend(existing.into_iter().filter_map(|r| r.event_id));
        Ok(())
    }

    async fn read_all(&self) -> Result<Vec<Record>, StreamError> {
        let stream = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .map_err(err)?;
        let shards: Vec<String> = stream
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut records = Vec::new();
        for shard in shards {
            let mut iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.arn)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(err)?
                .shard_iterator
                .unwrap_or_default();
            // A page may hold only part of what is there: read until a page comes back empty.
            for _ in 0..MAX_PAGES_PER_POLL {
                let out = self
                    .client
                    .get_records()
                    .shard_iterator(&iterator)
                    .send()
                    .await
                    .map_err(err)?;
                let empty = out.records().is_empty();
                records.extend(out.records().iter().cloned());
                match out.next_shard_iterator {
                    Some(next) if !empty => iterator = next,
                    _ => break,
                }
            }
        }
        Ok(records)
    }

    /// Records not returned before. `is_ttl` tells which REMOVE records were TTL deletions.
    pub async fn poll(&mut self, is_ttl: impl Fn(&EventRecord) -> bool) -> Result<Vec<EventRecord>, StreamError> {
        let mut fresh = Vec::new();
        for r in self.read_all().await? {
            let Some(id) = r.event_id().map(str::to_owned) else {
                continue;
            };
            if !self.seen.insert(id) {
                continue;
            }
            let mut record = lambda_record(&r, &self.arn);
            if record.event_name == "REMOVE" && is_ttl(&record) {
                let mut identity = UserIdentity::default();
                identity.type_ = "Service".into();
                identity.principal_id = "dynamodb.amazonaws.com".into();
                record.user_identity = Some(identity);
            }
            fresh.push(record);
        }
        Ok(fresh)
    }
}

fn lambda_value(v: &AttributeValue) -> serde_dynamo::AttributeValue {
    use serde_dynamo::AttributeValue as L;
    match v {
        AttributeValue::S(s) => L::S(s.clone()),
        AttributeValue::N(n) => L::N(n.clone()),
        AttributeValue::Bool(b) => L::Bool(*b),
        AttributeValue::Ss(s) => L::Ss(s.clone()),
        AttributeValue::Ns(n) => L::Ns(n.clone()),
        AttributeValue::B(b) => L::B(b.as_ref().to_vec()),
        AttributeValue::Bs(bs) => L::Bs(bs.iter().map(|b| b.as_ref().to_vec()).collect()),
        AttributeValue::L(l) => L::L(l.iter().map(lambda_value).collect()),
        AttributeValue::M(m) => L::M(m.iter().map(|(k, v)| (k.clone(), lambda_value(v))).collect()),
        _ => L::Null(true),
    }
}

fn lambda_item(m: Option<&HashMap<String, AttributeValue>>) -> serde_dynamo::Item {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), lambda_value(v)))
            .collect::<HashMap<_, _>>()
            .into()
    })
    .unwrap_or_default()
}

fn lambda_record(r: &Record, stream_arn: &str) -> EventRecord {
    let mut record = EventRecord::default();
    record.event_id = r.event_id().unwrap_or_default().to_owned();
    record.event_name = r.event_name().map(|n| n.as_str().to_owned()).unwrap_or_default();
    record.aws_region = r.aws_region().unwrap_or("us-east-1").to_owned();
    record.event_source = Some("aws:dynamodb".into());
    record.event_source_arn = Some(stream_arn.to_owned());
    if let Some(d) = r.dynamodb() {
        record.change.keys = lambda_item(d.keys.as_ref());
        record.change.old_image = lambda_item(d.old_image.as_ref());
        record.change.new_image = lambda_item(d.new_image.as_ref());
        record.change.sequence_number = d.sequence_number().map(str::to_owned);
    }
    record
}
