-- 0002: contacts, contact lists, messages, dead letters.
--
-- Same conventions as 0001: `{db}` is the database, every statement is idempotent,
-- storage tables (`*_store`) are ReplacingMergeTree keyed by event and keep the first
-- receipt, and the views give one row per entity: each column the newest non-empty value
-- by receipt time. Digits-only forms of phone numbers are computed in the views, for
-- joins between tables whatever punctuation the sender used.

CREATE TABLE IF NOT EXISTS {db}.contact_events_store
(
    event_id String,
    tenant String,
    event String,
    contact_id Int64,
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
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (tenant, contact_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.contact_list_events_store
(
    event_id String,
    tenant String,
    event String,
    list_id Int64,
    received_at DateTime('UTC'),
    received_at_ms UInt64,
    name String,
    description String,
    size Nullable(Int64),
    member_ids Array(Int64),
    created_at Nullable(DateTime('UTC')),
    utc_offset_s Nullable(Int32),
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (tenant, list_id, event_id);

CREATE TABLE IF NOT EXISTS {db}.message_events_store
(
    event_id String,
    tenant String,
    event String,
    message_id String,
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
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(received_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (tenant, message_id, event_id);

-- A record dead-lettered twice (a stage redid it after a restart) is one row.
CREATE TABLE IF NOT EXISTS {db}.dead_letters_store
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
    loaded_at DateTime('UTC') DEFAULT now(),
    first_seen_rank UInt64 MATERIALIZED bitNot(failed_at_ms)
)
ENGINE = ReplacingMergeTree(first_seen_rank)
ORDER BY (stage, source_topic, source_partition, source_offset);

CREATE VIEW IF NOT EXISTS {db}.dead_letters AS
SELECT
    stage, reason, event_id, tenant, event, source_topic, source_partition, source_offset,
    key, payload, failed_at, loaded_at
FROM {db}.dead_letters_store FINAL;

-- One row per contact, from contact events and from the contacts embedded in calls.
CREATE VIEW IF NOT EXISTS {db}.contacts AS
SELECT
    tenant,
    contact_id,
    argMaxIf(e_first_name, v, e_first_name != '') AS first_name,
    argMaxIf(e_last_name, v, e_last_name != '') AS last_name,
    concat(first_name, if(first_name != '' AND last_name != '', ' ', ''), last_name) AS full_name,
    argMaxIf(e_email, v, e_email != '') AS email,
    argMaxIf(e_phone, v, e_phone != '') AS phone,
    replaceRegexpAll(phone, '[^0-9]', '') AS phone_digits,
    argMaxIf(e_created_at, v, isNotNull(e_created_at)) AS created_at,
    argMaxIf(e_utc_offset_s, v, isNotNull(e_utc_offset_s)) AS utc_offset_s,
    argMaxIf(e_additional_fields, v, e_additional_fields NOT IN ('', '{}')) AS additional_fields,
    argMaxIf(e_integrations, v, e_integrations NOT IN ('', '{}')) AS integrations,
    countIf(e_event IN ('contact-created', 'contact-modified')) AS contact_events,
    count() AS events,
    min(e_received_at) AS first_seen_at,
    max(e_received_at) AS last_seen_at
FROM
(
    SELECT
        tenant, contact_id, received_at_ms AS v, received_at AS e_received_at, event AS e_event,
        first_name AS e_first_name, last_name AS e_last_name, email AS e_email,
        phone AS e_phone, created_at AS e_created_at, utc_offset_s AS e_utc_offset_s,
        additional_fields AS e_additional_fields, integrations AS e_integrations
    FROM {db}.contact_events_store FINAL
)
GROUP BY tenant, contact_id;

CREATE VIEW IF NOT EXISTS {db}.contact_lists AS
SELECT
    tenant,
    list_id,
    argMaxIf(e_name, v, e_name != '') AS name,
    argMaxIf(e_description, v, e_description != '') AS description,
    argMaxIf(e_size, v, isNotNull(e_size)) AS size,
    argMaxIf(e_member_ids, v, notEmpty(e_member_ids)) AS member_ids,
    argMaxIf(e_created_at, v, isNotNull(e_created_at)) AS created_at,
    argMaxIf(e_utc_offset_s, v, isNotNull(e_utc_offset_s)) AS utc_offset_s,
    count() AS events,
    min(e_received_at) AS first_seen_at,
    max(e_received_at) AS last_seen_at
FROM
(
    SELECT
        tenant, list_id, received_at_ms AS v, received_at AS e_received_at, name AS e_name,
        description AS e_description, size AS e_size, member_ids AS e_member_ids,
        created_at AS e_created_at, utc_offset_s AS e_utc_offset_s
    FROM {db}.contact_list_events_store FINAL
)
GROUP BY tenant, list_id;

CREATE VIEW IF NOT EXISTS {db}.messages AS
SELECT
    tenant,
    message_id,
    argMaxIf(e_direction, v, e_direction != '') AS direction,
    argMaxIf(e_channel, v, e_channel != '') AS channel,
    argMaxIf(e_from_number, v, e_from_number != '') AS from_number,
    replaceRegexpAll(from_number, '[^0-9]', '') AS from_digits,
    argMaxIf(e_to_number, v, e_to_number != '') AS to_number,
    replaceRegexpAll(to_number, '[^0-9]', '') AS to_digits,
    argMaxIf(e_text, v, e_text != '') AS text,
    argMaxIf(e_sent_at, v, isNotNull(e_sent_at)) AS sent_at,
    argMaxIf(e_utc_offset_s, v, isNotNull(e_utc_offset_s)) AS utc_offset_s,
    argMaxIf(e_status, v, e_status != '') AS status,
    argMaxIf(e_contact_id, v, isNotNull(e_contact_id)) AS contact_id,
    argMaxIf(e_agent_id, v, isNotNull(e_agent_id)) AS agent_id,
    argMaxIf(e_agent_name, v, e_agent_name != '') AS agent_name,
    count() AS events,
    min(e_received_at) AS first_seen_at,
    max(e_received_at) AS last_seen_at
FROM
(
    SELECT
        tenant, message_id, received_at_ms AS v, received_at AS e_received_at,
        direction AS e_direction, channel AS e_channel, from_number AS e_from_number,
        to_number AS e_to_number, text AS e_text, sent_at AS e_sent_at,
        utc_offset_s AS e_utc_offset_s, status AS e_status, contact_id AS e_contact_id,
        agent_id AS e_agent_id, agent_name AS e_agent_name
    FROM {db}.message_events_store FINAL
)
GROUP BY tenant, message_id;
