-- How do calls end, day by day: answered, abandoned, voicemail, not answered?
SELECT
    tenant,
    toDate(started_at + ifNull(utc_offset_s, 0)) AS local_day,
    multiIf(ifNull(voicemail, 0) = 1, 'voicemail',
            ifNull(abandoned, 0) = 1, 'abandoned',
            ifNull(talk_time_s, 0) > 0, 'answered',
            'not answered') AS outcome,
    count() AS calls
FROM switchboard.calls
WHERE key_day >= toDate(now() - INTERVAL 30 DAY, 'UTC') AND started_at >= now() - INTERVAL 30 DAY
GROUP BY tenant, local_day, outcome
ORDER BY tenant, local_day, outcome
