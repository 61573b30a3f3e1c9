-- 0007: storage that ages well and reads that prune.
--
-- Until 0003 every reader view merged an entity's whole history at query time (FINAL +
-- GROUP BY over unpartitioned tables) and filtered on `started_at` afterwards. From here:
--
-- * The loader writes to new per-event tables, `*_store_v2`: partitioned by month,
--   sorted so that a tenant and a time range prune, with two columns the loader fills
--   (see README, "Loader contract"): `loaded_at_ms` (one value per block, the same when
--   a block is redone, later for a replay) and, on typed rows, `key_day` (the entity's
--   day, assigned once per entity at first sight and kept in `entity_keys`). The loader
--   inserts an event once (sender duplicates are dropped before insert); only a redone
--   block (identical rows) or a replay (same event, later `loaded_at_ms`) repeat one.
--   New tables, not ALTERs: 18.16 has no `ADD COLUMN IF NOT EXISTS` and a table's
--   partitioning cannot be changed. The 0001/0002 `*_store` tables are left in place for
--   the backfill (warehouse/backfill/) and can be dropped after it.
-- * Materialized views fold every typed row into per-entity aggregate states
--   (`*_state`, AggregatingMergeTree) sorted (tenant, key_day, id), so background merges
--   keep about one row per entity. Each column's state is
--   maxIf((received_at_ms, loaded_at_ms, value), value is not empty): the newest receipt
--   wins, for one event the newest load wins (a replay's row replaces the older
--   normalization), and equal versions fall back to the larger value, so the answer
--   never depends on merge order. Every state is idempotent under an exact duplicate row
--   (a block redone on 18.16, which has no insert deduplication tokens): max, min,
--   uniqExact and groupUniqArray do not change when a row is added twice.
-- * The reader views keep their names and columns (plus `key_day`) and merge the states
--   grouped by (tenant, key_day, id). A reader's WHERE on tenant and key_day is pushed
--   below that GROUP BY (current ClickHouse always; 18.16 with
--   enable_optimize_predicate_expression = 1, see scripts/clickhouse/users.xml), so a
--   dashboard reads the days it shows, whatever the history. Readers filter
--   `key_day BETWEEN toDate(from, 'UTC') AND toDate(to, 'UTC') + 1` beside the precise
--   time filter (README, "Analytics SQL").
--
-- Only whole-line comments: the loader drops them and splits statements on semicolons.

-- Per-event storage (the loader's insert targets) ---------------------------------------

CREATE TABLE IF NOT EXISTS {db}.raw_events_store_v2
(
    event_id String,
    tenant String,
    event String,
    status String,
    entity String,
    entity_id String,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    source_addr String,
    payload String,
    error String,
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant, received_at, event_id);

CREATE TABLE IF NOT EXISTS {db}.call_events_store_v2
(
    event_id String,
    tenant String,
    event String,
    call_id Int64,
    key_day Date,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    direction String,
    started_at Nullable(DateTime('UTC')),
    ended_at Nullable(DateTime('UTC')),
    utc_offset_s Nullable(Int32),
    duration_s Nullable(Int64),
    talk_time_s Nullable(Int64),
    waiting_time_s Nullable(Int64),
    abandoned Nullable(UInt8),
    voicemail Nullable(UInt8),
    call_type String,
    sub_type String,
    tags Array(String),
    recording_urls Array(String),
    line_id Nullable(Int64),
    line_number String,
    line_alias String,
    campaign String,
    ring_group_id Nullable(Int64),
    ring_group String,
    disposition_id Nullable(Int64),
    disposition_code String,
    disposition_note String,
    contact_id Nullable(Int64),
    contact_phone String,
    transfer_number String,
    transfer_talk_time_s Nullable(Int64),
    external_numbers Array(String),
    agent_ids Array(Int64),
    agent_names Array(String),
    agent_actions Array(String),
    agent_types Array(String),
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, call_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.contact_events_store_v2
(
    event_id String,
    tenant String,
    event String,
    contact_id Int64,
    key_day Date,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    first_name String,
    last_name String,
    email String,
    phone String,
    created_at Nullable(DateTime('UTC')),
    utc_offset_s Nullable(Int32),
    additional_fields String,
    integrations String,
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, contact_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.contact_list_events_store_v2
(
    event_id String,
    tenant String,
    event String,
    list_id Int64,
    key_day Date,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    name String,
    description String,
    size Nullable(Int64),
    member_ids Array(Int64),
    created_at Nullable(DateTime('UTC')),
    utc_offset_s Nullable(Int32),
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, list_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.message_events_store_v2
(
    event_id String,
    tenant String,
    event String,
    message_id String,
    key_day Date,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    direction String,
    channel String,
    from_number String,
    to_number String,
    text String,
    sent_at Nullable(DateTime('UTC')),
    utc_offset_s Nullable(Int32),
    status String,
    contact_id Nullable(Int64),
    agent_id Nullable(Int64),
    agent_name String,
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, message_id, event_id);

-- A record dead-lettered again (a stage redid it after a restart) gets a later
-- failed_at: the view keeps the first failure per source record. Dead letters carry no
-- time that a redo keeps, so the view cannot prune by time; they are few.
CREATE TABLE IF NOT EXISTS {db}.dead_letters_store_v2
(
    stage String,
    reason String,
    event_id String,
    tenant String,
    event String,
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    key String,
    payload String,
    failed_at DateTime('UTC'),
    failed_at_ms UInt64,
    http_status Nullable(UInt16),
    source_addr String,
    loaded_at_ms UInt64
)
ENGINE = ReplacingMergeTree(loaded_at_ms)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (stage, source_topic, source_partition, source_offset, failed_at_ms);

-- The day of each entity, assigned by the loader at first sight and reused for all the
-- entity's later rows (a call's events must share one key_day even when a sparse event
-- has no start time). entity: 'call', 'contact', 'contact_list', 'message'; entity_id
-- as text. Should two rows for one entity ever exist, the earliest first receipt wins
-- (ties: the earlier day); the loader reads it with
-- argMin(key_day, (first_received_at_ms, key_day)) ... GROUP BY entity_id.
CREATE TABLE IF NOT EXISTS {db}.entity_keys
(
    tenant String,
    entity String,
    entity_id String,
    key_day Date,
    first_event_id String,
    first_received_at_ms UInt64,
    assigned_at_ms UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, entity, entity_id)
-- The loader reads it by key for every block's new entities: small granules keep each
-- lookup to a few hundred rows.
SETTINGS index_granularity = 256;

-- Aggregate states, one row per entity once merged ---------------------------------------

CREATE TABLE IF NOT EXISTS {db}.calls_state
(
    tenant String,
    key_day Date,
    call_id Int64,
    s_direction AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_started_at AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(DateTime('UTC'))), UInt8),
    s_ended_at AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(DateTime('UTC'))), UInt8),
    s_utc_offset_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int32)), UInt8),
    s_duration_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_talk_time_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_waiting_time_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_abandoned AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(UInt8)), UInt8),
    s_voicemail AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(UInt8)), UInt8),
    s_call_type AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_sub_type AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_tags AggregateFunction(maxIf, Tuple(UInt64, UInt64, Array(String)), UInt8),
    s_recording_urls AggregateFunction(groupUniqArrayArray, Array(String)),
    s_line_number AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_line_alias AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_campaign AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_ring_group_id AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_ring_group AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_disposition_code AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_disposition_note AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_contact_id AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_contact_phone AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_transfer_number AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_transfer_talk_time_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_agent_names AggregateFunction(maxIf, Tuple(UInt64, UInt64, Array(String)), UInt8),
    s_external_numbers AggregateFunction(maxIf, Tuple(UInt64, UInt64, Array(String)), UInt8),
    s_agents AggregateFunction(maxIf, Tuple(UInt64, UInt64, Tuple(Array(Int64), Array(String), Array(String), Array(String))), UInt8),
    s_first_event_at AggregateFunction(min, DateTime('UTC')),
    s_last_event_at AggregateFunction(max, DateTime('UTC')),
    s_events AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, call_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.calls_state_mv TO {db}.calls_state AS
SELECT
    tenant,
    key_day,
    call_id,
    maxIfState((received_at_ms, loaded_at_ms, direction), direction != '') AS s_direction,
    maxIfState((received_at_ms, loaded_at_ms, started_at), isNotNull(started_at)) AS s_started_at,
    maxIfState((received_at_ms, loaded_at_ms, ended_at), isNotNull(ended_at)) AS s_ended_at,
    maxIfState((received_at_ms, loaded_at_ms, utc_offset_s), isNotNull(utc_offset_s)) AS s_utc_offset_s,
    maxIfState((received_at_ms, loaded_at_ms, duration_s), isNotNull(duration_s)) AS s_duration_s,
    maxIfState((received_at_ms, loaded_at_ms, talk_time_s), isNotNull(talk_time_s)) AS s_talk_time_s,
    maxIfState((received_at_ms, loaded_at_ms, waiting_time_s), isNotNull(waiting_time_s)) AS s_waiting_time_s,
    maxIfState((received_at_ms, loaded_at_ms, abandoned), isNotNull(abandoned)) AS s_abandoned,
    maxIfState((received_at_ms, loaded_at_ms, voicemail), isNotNull(voicemail)) AS s_voicemail,
    maxIfState((received_at_ms, loaded_at_ms, call_type), call_type != '') AS s_call_type,
    maxIfState((received_at_ms, loaded_at_ms, sub_type), sub_type != '') AS s_sub_type,
    maxIfState((received_at_ms, loaded_at_ms, tags), notEmpty(tags)) AS s_tags,
    groupUniqArrayArrayState(recording_urls) AS s_recording_urls,
    maxIfState((received_at_ms, loaded_at_ms, line_number), line_number != '') AS s_line_number,
    maxIfState((received_at_ms, loaded_at_ms, line_alias), line_alias != '') AS s_line_alias,
    maxIfState((received_at_ms, loaded_at_ms, campaign), campaign != '') AS s_campaign,
    maxIfState((received_at_ms, loaded_at_ms, ring_group_id), isNotNull(ring_group_id)) AS s_ring_group_id,
    maxIfState((received_at_ms, loaded_at_ms, ring_group), ring_group != '') AS s_ring_group,
    maxIfState((received_at_ms, loaded_at_ms, disposition_code), disposition_code != '') AS s_disposition_code,
    maxIfState((received_at_ms, loaded_at_ms, disposition_note), disposition_note != '') AS s_disposition_note,
    maxIfState((received_at_ms, loaded_at_ms, contact_id), isNotNull(contact_id)) AS s_contact_id,
    maxIfState((received_at_ms, loaded_at_ms, contact_phone), contact_phone != '') AS s_contact_phone,
    maxIfState((received_at_ms, loaded_at_ms, transfer_number), transfer_number != '') AS s_transfer_number,
    maxIfState((received_at_ms, loaded_at_ms, transfer_talk_time_s), isNotNull(transfer_talk_time_s)) AS s_transfer_talk_time_s,
    maxIfState((received_at_ms, loaded_at_ms, agent_names), notEmpty(agent_names)) AS s_agent_names,
    maxIfState((received_at_ms, loaded_at_ms, external_numbers), notEmpty(external_numbers)) AS s_external_numbers,
    maxIfState((received_at_ms, loaded_at_ms, (agent_ids, agent_names, agent_actions, agent_types)), notEmpty(agent_names)) AS s_agents,
    minState(received_at) AS s_first_event_at,
    maxState(received_at) AS s_last_event_at,
    uniqExactState(event_id) AS s_events
FROM {db}.call_events_store_v2
GROUP BY tenant, key_day, call_id;

CREATE TABLE IF NOT EXISTS {db}.contacts_state
(
    tenant String,
    key_day Date,
    contact_id Int64,
    s_first_name AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_last_name AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_email AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_phone AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_created_at AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(DateTime('UTC'))), UInt8),
    s_utc_offset_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int32)), UInt8),
    s_additional_fields AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_integrations AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_contact_events AggregateFunction(uniqExactIf, String, UInt8),
    s_events AggregateFunction(uniqExact, String),
    s_first_seen_at AggregateFunction(min, DateTime('UTC')),
    s_last_seen_at AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, contact_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.contacts_state_mv TO {db}.contacts_state AS
SELECT
    tenant,
    key_day,
    contact_id,
    maxIfState((received_at_ms, loaded_at_ms, first_name), first_name != '') AS s_first_name,
    maxIfState((received_at_ms, loaded_at_ms, last_name), last_name != '') AS s_last_name,
    maxIfState((received_at_ms, loaded_at_ms, email), email != '') AS s_email,
    maxIfState((received_at_ms, loaded_at_ms, phone), phone != '') AS s_phone,
    maxIfState((received_at_ms, loaded_at_ms, created_at), isNotNull(created_at)) AS s_created_at,
    maxIfState((received_at_ms, loaded_at_ms, utc_offset_s), isNotNull(utc_offset_s)) AS s_utc_offset_s,
    maxIfState((received_at_ms, loaded_at_ms, additional_fields), additional_fields NOT IN ('', '{}')) AS s_additional_fields,
    maxIfState((received_at_ms, loaded_at_ms, integrations), integrations NOT IN ('', '{}')) AS s_integrations,
    uniqExactIfState(event_id, event IN ('contact-created', 'contact-modified')) AS s_contact_events,
    uniqExactState(event_id) AS s_events,
    minState(received_at) AS s_first_seen_at,
    maxState(received_at) AS s_last_seen_at
FROM {db}.contact_events_store_v2
GROUP BY tenant, key_day, contact_id;

CREATE TABLE IF NOT EXISTS {db}.contact_lists_state
(
    tenant String,
    key_day Date,
    list_id Int64,
    s_name AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_description AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_size AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_member_ids AggregateFunction(maxIf, Tuple(UInt64, UInt64, Array(Int64)), UInt8),
    s_created_at AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(DateTime('UTC'))), UInt8),
    s_utc_offset_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int32)), UInt8),
    s_events AggregateFunction(uniqExact, String),
    s_first_seen_at AggregateFunction(min, DateTime('UTC')),
    s_last_seen_at AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, list_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.contact_lists_state_mv TO {db}.contact_lists_state AS
SELECT
    tenant,
    key_day,
    list_id,
    maxIfState((received_at_ms, loaded_at_ms, name), name != '') AS s_name,
    maxIfState((received_at_ms, loaded_at_ms, description), description != '') AS s_description,
    maxIfState((received_at_ms, loaded_at_ms, size), isNotNull(size)) AS s_size,
    maxIfState((received_at_ms, loaded_at_ms, member_ids), notEmpty(member_ids)) AS s_member_ids,
    maxIfState((received_at_ms, loaded_at_ms, created_at), isNotNull(created_at)) AS s_created_at,
    maxIfState((received_at_ms, loaded_at_ms, utc_offset_s), isNotNull(utc_offset_s)) AS s_utc_offset_s,
    uniqExactState(event_id) AS s_events,
    minState(received_at) AS s_first_seen_at,
    maxState(received_at) AS s_last_seen_at
FROM {db}.contact_list_events_store_v2
GROUP BY tenant, key_day, list_id;

CREATE TABLE IF NOT EXISTS {db}.messages_state
(
    tenant String,
    key_day Date,
    message_id String,
    s_direction AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_channel AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_from_number AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_to_number AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_text AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_sent_at AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(DateTime('UTC'))), UInt8),
    s_utc_offset_s AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int32)), UInt8),
    s_status AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_contact_id AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_agent_id AggregateFunction(maxIf, Tuple(UInt64, UInt64, Nullable(Int64)), UInt8),
    s_agent_name AggregateFunction(maxIf, Tuple(UInt64, UInt64, String), UInt8),
    s_events AggregateFunction(uniqExact, String),
    s_first_seen_at AggregateFunction(min, DateTime('UTC')),
    s_last_seen_at AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(key_day)
ORDER BY (tenant, key_day, message_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.messages_state_mv TO {db}.messages_state AS
SELECT
    tenant,
    key_day,
    message_id,
    maxIfState((received_at_ms, loaded_at_ms, direction), direction != '') AS s_direction,
    maxIfState((received_at_ms, loaded_at_ms, channel), channel != '') AS s_channel,
    maxIfState((received_at_ms, loaded_at_ms, from_number), from_number != '') AS s_from_number,
    maxIfState((received_at_ms, loaded_at_ms, to_number), to_number != '') AS s_to_number,
    maxIfState((received_at_ms, loaded_at_ms, text), text != '') AS s_text,
    maxIfState((received_at_ms, loaded_at_ms, sent_at), isNotNull(sent_at)) AS s_sent_at,
    maxIfState((received_at_ms, loaded_at_ms, utc_offset_s), isNotNull(utc_offset_s)) AS s_utc_offset_s,
    maxIfState((received_at_ms, loaded_at_ms, status), status != '') AS s_status,
    maxIfState((received_at_ms, loaded_at_ms, contact_id), isNotNull(contact_id)) AS s_contact_id,
    maxIfState((received_at_ms, loaded_at_ms, agent_id), isNotNull(agent_id)) AS s_agent_id,
    maxIfState((received_at_ms, loaded_at_ms, agent_name), agent_name != '') AS s_agent_name,
    uniqExactState(event_id) AS s_events,
    minState(received_at) AS s_first_seen_at,
    maxState(received_at) AS s_last_seen_at
FROM {db}.message_events_store_v2
GROUP BY tenant, key_day, message_id;

-- Which tenants sent anything on which day: what the tenant variable reads.
CREATE TABLE IF NOT EXISTS {db}.tenant_days
(
    tenant String,
    day Date
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tenant_days_mv TO {db}.tenant_days AS
SELECT DISTINCT tenant, toDate(received_at) AS day
FROM {db}.raw_events_store_v2;

-- Reader views (same names and columns as before, plus key_day) ------------------------

DROP TABLE IF EXISTS {db}.raw_events;

-- Per-event views: one row per stored event (a redone block's copy and a replay's older
-- normalization collapse; the newest load wins). GROUP BY rather than FINAL, because
-- 18.16 pushes a reader's WHERE on the key columns into a GROUP BY view, not into a FINAL
-- one; the inner query renames the columns so the aggregates can take the plain names.
-- Nullable values go through a one-element tuple: 18.16's argMax skips NULL values, the
-- current engine's keeps them; a tuple is compared and kept the same way by both.
CREATE VIEW IF NOT EXISTS {db}.raw_events AS
SELECT
    event_id, tenant, argMax(e_event, v) AS event, argMax(e_status, v) AS status,
    argMax(e_entity, v) AS entity, argMax(e_entity_id, v) AS entity_id, received_at,
    argMax(e_source_addr, v) AS source_addr, argMax(e_payload, v) AS payload,
    argMax(e_error, v) AS error, toDateTime(intDiv(max(v), 1000), 'UTC') AS loaded_at
FROM
(
    SELECT
        tenant, received_at, event_id, event AS e_event, status AS e_status, entity AS e_entity,
        entity_id AS e_entity_id, source_addr AS e_source_addr, payload AS e_payload,
        error AS e_error, loaded_at_ms AS v
    FROM {db}.raw_events_store_v2
)
GROUP BY tenant, received_at, event_id;

DROP TABLE IF EXISTS {db}.call_events;

CREATE VIEW IF NOT EXISTS {db}.call_events AS
SELECT
    event_id, tenant, argMax(e_event, v) AS event, call_id, argMax(e_received_at, v) AS received_at,
    argMax(e_direction, v) AS direction, tupleElement(argMax(tuple(e_started_at), v), 1) AS started_at,
    tupleElement(argMax(tuple(e_ended_at), v), 1) AS ended_at, tupleElement(argMax(tuple(e_utc_offset_s), v), 1) AS utc_offset_s,
    tupleElement(argMax(tuple(e_duration_s), v), 1) AS duration_s, tupleElement(argMax(tuple(e_talk_time_s), v), 1) AS talk_time_s,
    tupleElement(argMax(tuple(e_waiting_time_s), v), 1) AS waiting_time_s, tupleElement(argMax(tuple(e_abandoned), v), 1) AS abandoned,
    tupleElement(argMax(tuple(e_voicemail), v), 1) AS voicemail, argMax(e_call_type, v) AS call_type,
    argMax(e_sub_type, v) AS sub_type, argMax(e_tags, v) AS tags,
    argMax(e_recording_urls, v) AS recording_urls, tupleElement(argMax(tuple(e_line_id), v), 1) AS line_id,
    argMax(e_line_number, v) AS line_number, argMax(e_line_alias, v) AS line_alias,
    argMax(e_campaign, v) AS campaign, tupleElement(argMax(tuple(e_ring_group_id), v), 1) AS ring_group_id,
    argMax(e_ring_group, v) AS ring_group, tupleElement(argMax(tuple(e_disposition_id), v), 1) AS disposition_id,
    argMax(e_disposition_code, v) AS disposition_code,
    argMax(e_disposition_note, v) AS disposition_note, tupleElement(argMax(tuple(e_contact_id), v), 1) AS contact_id,
    argMax(e_contact_phone, v) AS contact_phone, argMax(e_transfer_number, v) AS transfer_number,
    tupleElement(argMax(tuple(e_transfer_talk_time_s), v), 1) AS transfer_talk_time_s,
    argMax(e_external_numbers, v) AS external_numbers, argMax(e_agent_ids, v) AS agent_ids,
    argMax(e_agent_names, v) AS agent_names, argMax(e_agent_actions, v) AS agent_actions,
    argMax(e_agent_types, v) AS agent_types, toDateTime(intDiv(max(v), 1000), 'UTC') AS loaded_at,
    key_day
FROM
(
    SELECT
        tenant, key_day, call_id, event_id, event AS e_event, received_at AS e_received_at,
        direction AS e_direction, started_at AS e_started_at, ended_at AS e_ended_at,
        utc_offset_s AS e_utc_offset_s, duration_s AS e_duration_s, talk_time_s AS e_talk_time_s,
        waiting_time_s AS e_waiting_time_s, abandoned AS e_abandoned, voicemail AS e_voicemail,
        call_type AS e_call_type, sub_type AS e_sub_type, tags AS e_tags,
        recording_urls AS e_recording_urls, line_id AS e_line_id, line_number AS e_line_number,
        line_alias AS e_line_alias, campaign AS e_campaign, ring_group_id AS e_ring_group_id,
        ring_group AS e_ring_group, disposition_id AS e_disposition_id,
        disposition_code AS e_disposition_code, disposition_note AS e_disposition_note,
        contact_id AS e_contact_id, contact_phone AS e_contact_phone,
        transfer_number AS e_transfer_number, transfer_talk_time_s AS e_transfer_talk_time_s,
        external_numbers AS e_external_numbers, agent_ids AS e_agent_ids,
        agent_names AS e_agent_names, agent_actions AS e_agent_actions,
        agent_types AS e_agent_types, loaded_at_ms AS v
    FROM {db}.call_events_store_v2
)
GROUP BY tenant, key_day, call_id, event_id;

DROP TABLE IF EXISTS {db}.dead_letters;

CREATE VIEW IF NOT EXISTS {db}.dead_letters AS
SELECT
    stage,
    tupleElement(first, 2) AS reason,
    tupleElement(first, 3) AS event_id,
    tupleElement(first, 4) AS tenant,
    tupleElement(first, 5) AS event,
    source_topic,
    source_partition,
    source_offset,
    tupleElement(first, 6) AS key,
    tupleElement(first, 7) AS payload,
    tupleElement(first, 8) AS failed_at,
    tupleElement(first, 10) AS http_status,
    tupleElement(first, 11) AS source_addr,
    toDateTime(intDiv(tupleElement(first, 9), 1000), 'UTC') AS loaded_at
FROM
(
    SELECT
        stage, source_topic, source_partition, source_offset,
        min((failed_at_ms, e_reason, e_event_id, e_tenant, e_event, e_key, e_payload, e_failed_at,
             e_loaded_at_ms, e_http_status, e_source_addr)) AS first
    FROM
    (
        SELECT
            stage, source_topic, source_partition, source_offset, failed_at_ms,
            reason AS e_reason, event_id AS e_event_id, tenant AS e_tenant, event AS e_event,
            key AS e_key, payload AS e_payload, failed_at AS e_failed_at,
            loaded_at_ms AS e_loaded_at_ms, http_status AS e_http_status,
            source_addr AS e_source_addr
        FROM {db}.dead_letters_store_v2
    )
    GROUP BY stage, source_topic, source_partition, source_offset
);

DROP TABLE IF EXISTS {db}.calls;

CREATE VIEW IF NOT EXISTS {db}.calls AS
SELECT
    tenant,
    call_id,
    tupleElement(maxIfMerge(s_direction), 3) AS direction,
    tupleElement(maxIfMerge(s_started_at), 3) AS started_at,
    tupleElement(maxIfMerge(s_ended_at), 3) AS ended_at,
    tupleElement(maxIfMerge(s_utc_offset_s), 3) AS utc_offset_s,
    tupleElement(maxIfMerge(s_duration_s), 3) AS duration_s,
    tupleElement(maxIfMerge(s_talk_time_s), 3) AS talk_time_s,
    tupleElement(maxIfMerge(s_waiting_time_s), 3) AS waiting_time_s,
    tupleElement(maxIfMerge(s_abandoned), 3) AS abandoned,
    tupleElement(maxIfMerge(s_voicemail), 3) AS voicemail,
    tupleElement(maxIfMerge(s_call_type), 3) AS call_type,
    tupleElement(maxIfMerge(s_sub_type), 3) AS sub_type,
    tupleElement(maxIfMerge(s_tags), 3) AS tags,
    arraySort(groupUniqArrayArrayMerge(s_recording_urls)) AS recording_urls,
    tupleElement(maxIfMerge(s_line_number), 3) AS line_number,
    replaceRegexpAll(line_number, '[^0-9]', '') AS line_number_digits,
    tupleElement(maxIfMerge(s_line_alias), 3) AS line_alias,
    tupleElement(maxIfMerge(s_campaign), 3) AS campaign,
    tupleElement(maxIfMerge(s_ring_group_id), 3) AS ring_group_id,
    tupleElement(maxIfMerge(s_ring_group), 3) AS ring_group,
    tupleElement(maxIfMerge(s_disposition_code), 3) AS disposition_code,
    tupleElement(maxIfMerge(s_disposition_note), 3) AS disposition_note,
    tupleElement(maxIfMerge(s_contact_id), 3) AS contact_id,
    tupleElement(maxIfMerge(s_contact_phone), 3) AS contact_phone,
    replaceRegexpAll(contact_phone, '[^0-9]', '') AS contact_phone_digits,
    tupleElement(maxIfMerge(s_transfer_number), 3) AS transfer_number,
    tupleElement(maxIfMerge(s_transfer_talk_time_s), 3) AS transfer_talk_time_s,
    tupleElement(maxIfMerge(s_agent_names), 3) AS agent_names,
    tupleElement(maxIfMerge(s_external_numbers), 3) AS external_numbers,
    minMerge(s_first_event_at) AS first_event_at,
    maxMerge(s_last_event_at) AS last_event_at,
    uniqExactMerge(s_events) AS events,
    key_day
FROM {db}.calls_state
GROUP BY tenant, key_day, call_id;

-- One row per (call, agent) of the call's newest event that lists agents; the four
-- arrays come from one event. call_started_at is the call's started_at, to filter by
-- the call's time without a join (named apart so a join with `calls` keeps working).
DROP TABLE IF EXISTS {db}.call_agents;

CREATE VIEW IF NOT EXISTS {db}.call_agents AS
SELECT
    tenant,
    call_id,
    agent_id,
    agent_name,
    agent_action,
    agent_type,
    key_day,
    call_started_at
FROM
(
    SELECT
        tenant,
        key_day,
        call_id,
        tupleElement(maxIfMerge(s_agents), 3) AS agents,
        tupleElement(maxIfMerge(s_started_at), 3) AS call_started_at
    FROM {db}.calls_state
    GROUP BY tenant, key_day, call_id
)
ARRAY JOIN
    tupleElement(agents, 1) AS agent_id,
    tupleElement(agents, 2) AS agent_name,
    tupleElement(agents, 3) AS agent_action,
    tupleElement(agents, 4) AS agent_type;

DROP TABLE IF EXISTS {db}.contacts;

CREATE VIEW IF NOT EXISTS {db}.contacts AS
SELECT
    tenant,
    contact_id,
    tupleElement(maxIfMerge(s_first_name), 3) AS first_name,
    tupleElement(maxIfMerge(s_last_name), 3) AS last_name,
    concat(first_name, if(first_name != '' AND last_name != '', ' ', ''), last_name) AS full_name,
    tupleElement(maxIfMerge(s_email), 3) AS email,
    tupleElement(maxIfMerge(s_phone), 3) AS phone,
    replaceRegexpAll(phone, '[^0-9]', '') AS phone_digits,
    tupleElement(maxIfMerge(s_created_at), 3) AS created_at,
    tupleElement(maxIfMerge(s_utc_offset_s), 3) AS utc_offset_s,
    tupleElement(maxIfMerge(s_additional_fields), 3) AS additional_fields,
    tupleElement(maxIfMerge(s_integrations), 3) AS integrations,
    uniqExactIfMerge(s_contact_events) AS contact_events,
    uniqExactMerge(s_events) AS events,
    minMerge(s_first_seen_at) AS first_seen_at,
    maxMerge(s_last_seen_at) AS last_seen_at,
    key_day
FROM {db}.contacts_state
GROUP BY tenant, key_day, contact_id;

DROP TABLE IF EXISTS {db}.contact_lists;

CREATE VIEW IF NOT EXISTS {db}.contact_lists AS
SELECT
    tenant,
    list_id,
    tupleElement(maxIfMerge(s_name), 3) AS name,
    tupleElement(maxIfMerge(s_description), 3) AS description,
    tupleElement(maxIfMerge(s_size), 3) AS size,
    tupleElement(maxIfMerge(s_member_ids), 3) AS member_ids,
    tupleElement(maxIfMerge(s_created_at), 3) AS created_at,
    tupleElement(maxIfMerge(s_utc_offset_s), 3) AS utc_offset_s,
    uniqExactMerge(s_events) AS events,
    minMerge(s_first_seen_at) AS first_seen_at,
    maxMerge(s_last_seen_at) AS last_seen_at,
    key_day
FROM {db}.contact_lists_state
GROUP BY tenant, key_day, list_id;

DROP TABLE IF EXISTS {db}.messages;

CREATE VIEW IF NOT EXISTS {db}.messages AS
SELECT
    tenant,
    message_id,
    tupleElement(maxIfMerge(s_direction), 3) AS direction,
    tupleElement(maxIfMerge(s_channel), 3) AS channel,
    tupleElement(maxIfMerge(s_from_number), 3) AS from_number,
    replaceRegexpAll(from_number, '[^0-9]', '') AS from_digits,
    tupleElement(maxIfMerge(s_to_number), 3) AS to_number,
    replaceRegexpAll(to_number, '[^0-9]', '') AS to_digits,
    tupleElement(maxIfMerge(s_text), 3) AS text,
    tupleElement(maxIfMerge(s_sent_at), 3) AS sent_at,
    tupleElement(maxIfMerge(s_utc_offset_s), 3) AS utc_offset_s,
    tupleElement(maxIfMerge(s_status), 3) AS status,
    tupleElement(maxIfMerge(s_contact_id), 3) AS contact_id,
    tupleElement(maxIfMerge(s_agent_id), 3) AS agent_id,
    tupleElement(maxIfMerge(s_agent_name), 3) AS agent_name,
    uniqExactMerge(s_events) AS events,
    minMerge(s_first_seen_at) AS first_seen_at,
    maxMerge(s_last_seen_at) AS last_seen_at,
    key_day
FROM {db}.messages_state
GROUP BY tenant, key_day, message_id
