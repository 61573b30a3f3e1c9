-- 0001: raw events, call events, and the merged `calls` view.
--
-- `{db}` is replaced by the configured database name. Every statement is idempotent
-- (IF NOT EXISTS), so a migration interrupted half way is simply applied again.
-- Keep to SQL that ClickHouse 18.16 and current ClickHouse both accept: see README.
--
-- Storage tables (`*_store`) may hold a row more than once until ClickHouse merges parts
-- (at-least-once delivery, sender retries). Analysts query the views, which collapse
-- duplicates by event_id with FINAL, keeping the first receipt: ReplacingMergeTree keeps
-- the highest version and `first_seen_rank` is the bitwise NOT of the receipt time.

CREATE TABLE IF NOT EXISTS {db}.raw_events_store
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
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (tenant, event_id);

CREATE TABLE IF NOT EXISTS {db}.call_events_store
(
    event_id String,
    tenant String,
    event String,
    call_id Int64,
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
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (tenant, call_id, event_id);

CREATE VIEW IF NOT EXISTS {db}.raw_events AS
SELECT
    event_id, tenant, event, status, entity, entity_id, received_at, source_addr,
    payload, error, loaded_at
FROM {db}.raw_events_store FINAL;

CREATE VIEW IF NOT EXISTS {db}.call_events AS
SELECT
    event_id, tenant, event, call_id, received_at, direction, started_at, ended_at,
    utc_offset_s, duration_s, talk_time_s, waiting_time_s, abandoned, voicemail, call_type,
    sub_type, tags, recording_urls, line_id, line_number, line_alias, campaign, ring_group_id,
    ring_group, disposition_id, disposition_code, disposition_note, contact_id, contact_phone,
    transfer_number, transfer_talk_time_s, external_numbers, agent_ids, agent_names,
    agent_actions, agent_types, loaded_at
FROM {db}.call_events_store FINAL;

-- One row per (call, agent) of the call's newest event that lists agents. The four
-- arrays are taken together (one tuple) so they always come from the same event.
CREATE VIEW IF NOT EXISTS {db}.call_agents AS
SELECT
    tenant,
    call_id,
    agent_id,
    agent_name,
    agent_action,
    agent_type
FROM
(
    SELECT
        tenant,
        call_id,
        argMaxIf((agent_ids, agent_names, agent_actions, agent_types), received_at_ms, notEmpty(agent_names)) AS agents
    FROM {db}.call_events_store FINAL
    GROUP BY tenant, call_id
)
ARRAY JOIN
    tupleElement(agents, 1) AS agent_id,
    tupleElement(agents, 2) AS agent_name,
    tupleElement(agents, 3) AS agent_action,
    tupleElement(agents, 4) AS agent_type;

-- One row per call: each column is the newest non-empty value of any of the call's
-- events (by receipt time), so a late retry of an older event never erases newer facts.
-- Recording URLs are the union over all events: recordings only ever add up.
-- The inner query renames columns (e_*) so the aggregates can take the plain names.
CREATE VIEW IF NOT EXISTS {db}.calls AS
SELECT
    tenant,
    call_id,
    argMaxIf(e_direction, v, e_direction != '') AS direction,
    argMaxIf(e_started_at, v, isNotNull(e_started_at)) AS started_at,
    argMaxIf(e_ended_at, v, isNotNull(e_ended_at)) AS ended_at,
    argMaxIf(e_utc_offset_s, v, isNotNull(e_utc_offset_s)) AS utc_offset_s,
    argMaxIf(e_duration_s, v, isNotNull(e_duration_s)) AS duration_s,
    argMaxIf(e_talk_time_s, v, isNotNull(e_talk_time_s)) AS talk_time_s,
    argMaxIf(e_waiting_time_s, v, isNotNull(e_waiting_time_s)) AS waiting_time_s,
    argMaxIf(e_abandoned, v, isNotNull(e_abandoned)) AS abandoned,
    argMaxIf(e_voicemail, v, isNotNull(e_voicemail)) AS voicemail,
    argMaxIf(e_call_type, v, e_call_type != '') AS call_type,
    argMaxIf(e_sub_type, v, e_sub_type != '') AS sub_type,
    argMaxIf(e_tags, v, notEmpty(e_tags)) AS tags,
    arraySort(groupUniqArrayArray(e_recording_urls)) AS recording_urls,
    argMaxIf(e_line_number, v, e_line_number != '') AS line_number,
    replaceRegexpAll(line_number, '[^0-9]', '') AS line_number_digits,
    argMaxIf(e_line_alias, v, e_line_alias != '') AS line_alias,
    argMaxIf(e_campaign, v, e_campaign != '') AS campaign,
    argMaxIf(e_ring_group_id, v, isNotNull(e_ring_group_id)) AS ring_group_id,
    argMaxIf(e_ring_group, v, e_ring_group != '') AS ring_group,
    argMaxIf(e_disposition_code, v, e_disposition_code != '') AS disposition_code,
    argMaxIf(e_disposition_note, v, e_disposition_note != '') AS disposition_note,
    argMaxIf(e_contact_id, v, isNotNull(e_contact_id)) AS contact_id,
    argMaxIf(e_contact_phone, v, e_contact_phone != '') AS contact_phone,
    replaceRegexpAll(contact_phone, '[^0-9]', '') AS contact_phone_digits,
    argMaxIf(e_transfer_number, v, e_transfer_number != '') AS transfer_number,
    argMaxIf(e_transfer_talk_time_s, v, isNotNull(e_transfer_talk_time_s)) AS transfer_talk_time_s,
    argMaxIf(e_agent_names, v, notEmpty(e_agent_names)) AS agent_names,
    argMaxIf(e_external_numbers, v, notEmpty(e_external_numbers)) AS external_numbers,
    min(e_received_at) AS first_event_at,
    max(e_received_at) AS last_event_at,
    count() AS events
FROM
(
    SELECT
        tenant, call_id, received_at_ms AS v, received_at AS e_received_at,
        direction AS e_direction, started_at AS e_started_at, ended_at AS e_ended_at,
        utc_offset_s AS e_utc_offset_s, duration_s AS e_duration_s,
        talk_time_s AS e_talk_time_s, waiting_time_s AS e_waiting_time_s,
        abandoned AS e_abandoned, voicemail AS e_voicemail, call_type AS e_call_type,
        sub_type AS e_sub_type, tags AS e_tags, recording_urls AS e_recording_urls,
        line_number AS e_line_number, line_alias AS e_line_alias, campaign AS e_campaign,
        ring_group_id AS e_ring_group_id, ring_group AS e_ring_group,
        disposition_code AS e_disposition_code, disposition_note AS e_disposition_note,
        contact_id AS e_contact_id, contact_phone AS e_contact_phone,
        transfer_number AS e_transfer_number, transfer_talk_time_s AS e_transfer_talk_time_s,
        agent_names AS e_agent_names, external_numbers AS e_external_numbers
    FROM {db}.call_events_store FINAL
)
GROUP BY tenant, call_id;
