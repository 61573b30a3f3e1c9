-- Backfill of the 0007 tables from the 0001/0002 storage tables, one bounded chunk per
-- statement. Run by scripts/backfill-0007 (which also explains the order of a live
-- upgrade); any chunk can be run by hand with the placeholders filled in:
--   {db}      the database
--   {tenant}  a tenant, quoted: 'acme'
--   {range}   a predicate on the table's chunk column (the entity id, or event_id for
--             raw events), e.g. call_id >= 1000000 AND call_id < 1200000
--   {month}   a month, for dead letters: 202611
-- Each statement only reads its chunk (the old tables are sorted by tenant, then the id)
-- and is idempotent: running a chunk again inserts identical rows, which the per-event
-- tables' FINAL and every aggregate state absorb. key_day is computed by the loader's
-- rule from the entity's earliest receipt, which lies in the same chunk since a chunk
-- holds whole entities. FINAL keeps each event's first receipt, as the loader does.
-- loaded_at_ms is the old row's loaded_at; a later replay therefore still wins.

-- step: keys_call
INSERT INTO {db}.entity_keys (tenant, entity, entity_id, key_day, first_event_id, first_received_at_ms, assigned_at_ms)
SELECT
    tenant, 'call', toString(call_id),
    argMin(ifNull(toDate(started_at), toDate(received_at)), (received_at_ms, event_id)),
    argMin(event_id, (received_at_ms, event_id)),
    min(received_at_ms),
    toUInt64(toUnixTimestamp(now())) * 1000
FROM {db}.call_events_store
WHERE tenant = {tenant} AND {range}
GROUP BY tenant, call_id;

-- step: keys_contact
INSERT INTO {db}.entity_keys (tenant, entity, entity_id, key_day, first_event_id, first_received_at_ms, assigned_at_ms)
SELECT
    tenant, 'contact', toString(contact_id),
    argMin(toDate(received_at), (received_at_ms, event_id)),
    argMin(event_id, (received_at_ms, event_id)),
    min(received_at_ms),
    toUInt64(toUnixTimestamp(now())) * 1000
FROM {db}.contact_events_store
WHERE tenant = {tenant} AND {range}
GROUP BY tenant, contact_id;

-- step: keys_contact_list
INSERT INTO {db}.entity_keys (tenant, entity, entity_id, key_day, first_event_id, first_received_at_ms, assigned_at_ms)
SELECT
    tenant, 'contact_list', toString(list_id),
    argMin(toDate(received_at), (received_at_ms, event_id)),
    argMin(event_id, (received_at_ms, event_id)),
    min(received_at_ms),
    toUInt64(toUnixTimestamp(now())) * 1000
FROM {db}.contact_list_events_store
WHERE tenant = {tenant} AND {range}
GROUP BY tenant, list_id;

-- step: keys_message
INSERT INTO {db}.entity_keys (tenant, entity, entity_id, key_day, first_event_id, first_received_at_ms, assigned_at_ms)
SELECT
    tenant, 'message', message_id,
    argMin(ifNull(toDate(sent_at), toDate(received_at)), (received_at_ms, event_id)),
    argMin(event_id, (received_at_ms, event_id)),
    min(received_at_ms),
    toUInt64(toUnixTimestamp(now())) * 1000
FROM {db}.message_events_store
WHERE tenant = {tenant} AND {range}
GROUP BY tenant, message_id;

-- step: raw_events
INSERT INTO {db}.raw_events_store_v2
    (event_id, tenant, event, status, entity, entity_id, received_at, received_at_ms, source_addr, payload, error, loaded_at_ms)
SELECT
    event_id, tenant, event, status, entity, entity_id, received_at, received_at_ms, source_addr, payload, error,
    toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM {db}.raw_events_store FINAL
WHERE tenant = {tenant} AND {range};

-- step: call_events
INSERT INTO {db}.call_events_store_v2
    (event_id, tenant, event, call_id, key_day, received_at, received_at_ms, direction, started_at, ended_at,
     utc_offset_s, duration_s, talk_time_s, waiting_time_s, abandoned, voicemail, call_type, sub_type, tags,
     recording_urls, line_id, line_number, line_alias, campaign, ring_group_id, ring_group, disposition_id,
     disposition_code, disposition_note, contact_id, contact_phone, transfer_number, transfer_talk_time_s,
     external_numbers, agent_ids, agent_names, agent_actions, agent_types, loaded_at_ms)
SELECT
    event_id, tenant, event, call_id, key_day, received_at, received_at_ms, direction, started_at, ended_at,
    utc_offset_s, duration_s, talk_time_s, waiting_time_s, abandoned, voicemail, call_type, sub_type, tags,
    recording_urls, line_id, line_number, line_alias, campaign, ring_group_id, ring_group, disposition_id,
    disposition_code, disposition_note, contact_id, contact_phone, transfer_number, transfer_talk_time_s,
    external_numbers, agent_ids, agent_names, agent_actions, agent_types, toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM
(
    SELECT * FROM {db}.call_events_store FINAL
    WHERE tenant = {tenant} AND {range}
) AS e
ALL INNER JOIN
(
    SELECT tenant, call_id, argMin(ifNull(toDate(started_at), toDate(received_at)), (received_at_ms, event_id)) AS key_day
    FROM {db}.call_events_store
    WHERE tenant = {tenant} AND {range}
    GROUP BY tenant, call_id
) AS k USING (tenant, call_id);

-- step: contact_events
INSERT INTO {db}.contact_events_store_v2
    (event_id, tenant, event, contact_id, key_day, received_at, received_at_ms, first_name, last_name, email, phone,
     created_at, utc_offset_s, additional_fields, integrations, loaded_at_ms)
SELECT
    event_id, tenant, event, contact_id, key_day, received_at, received_at_ms, first_name, last_name, email, phone,
    created_at, utc_offset_s, additional_fields, integrations, toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM
(
    SELECT * FROM {db}.contact_events_store FINAL
    WHERE tenant = {tenant} AND {range}
) AS e
ALL INNER JOIN
(
    SELECT tenant, contact_id, argMin(toDate(received_at), (received_at_ms, event_id)) AS key_day
    FROM {db}.contact_events_store
    WHERE tenant = {tenant} AND {range}
    GROUP BY tenant, contact_id
) AS k USING (tenant, contact_id);

-- step: contact_list_events
INSERT INTO {db}.contact_list_events_store_v2
    (event_id, tenant, event, list_id, key_day, received_at, received_at_ms, name, description, size, member_ids,
     created_at, utc_offset_s, loaded_at_ms)
SELECT
    event_id, tenant, event, list_id, key_day, received_at, received_at_ms, name, description, size, member_ids,
    created_at, utc_offset_s, toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM
(
    SELECT * FROM {db}.contact_list_events_store FINAL
    WHERE tenant = {tenant} AND {range}
) AS e
ALL INNER JOIN
(
    SELECT tenant, list_id, argMin(toDate(received_at), (received_at_ms, event_id)) AS key_day
    FROM {db}.contact_list_events_store
    WHERE tenant = {tenant} AND {range}
    GROUP BY tenant, list_id
) AS k USING (tenant, list_id);

-- step: message_events
INSERT INTO {db}.message_events_store_v2
    (event_id, tenant, event, message_id, key_day, received_at, received_at_ms, direction, channel, from_number,
     to_number, text, sent_at, utc_offset_s, status, contact_id, agent_id, agent_name, loaded_at_ms)
SELECT
    event_id, tenant, event, message_id, key_day, received_at, received_at_ms, direction, channel, from_number,
    to_number, text, sent_at, utc_offset_s, status, contact_id, agent_id, agent_name,
    toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM
(
    SELECT * FROM {db}.message_events_store FINAL
    WHERE tenant = {tenant} AND {range}
) AS e
ALL INNER JOIN
(
    SELECT tenant, message_id, argMin(ifNull(toDate(sent_at), toDate(received_at)), (received_at_ms, event_id)) AS key_day
    FROM {db}.message_events_store
    WHERE tenant = {tenant} AND {range}
    GROUP BY tenant, message_id
) AS k USING (tenant, message_id);

-- step: dead_letters
INSERT INTO {db}.dead_letters_store_v2
    (stage, reason, event_id, tenant, event, source_topic, source_partition, source_offset, key, payload, failed_at,
     failed_at_ms, loaded_at_ms)
SELECT
    stage, reason, event_id, tenant, event, source_topic, source_partition, source_offset, key, payload, failed_at,
    failed_at_ms, toUInt64(toUnixTimestamp(loaded_at)) * 1000
FROM {db}.dead_letters_store
WHERE toYYYYMM(failed_at) = {month};
