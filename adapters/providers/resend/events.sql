-- Resend webhook bodies as canonical events, set-based: the mapping of events.py's
-- parse() (one event per impacted recipient) for the bodies it can map exactly (see
-- adapters/bulk_events.py for the contract and macros). A line is left to parse() when it
-- has no email_id or created_at (its id is then a hash of the whole body), its time is
-- not plain ISO 8601, a field has a type parse() would stringify, a recipient or From is
-- not a bare address, its tags are the API's [{name, value}] list, or it has duplicate
-- keys. The classes mirror EVENT_TYPES and BOUNCE_CLASSES; the parity test
-- (tests/core/test_bulk_parse.py) runs every key of those maps through both.
with objects as (
    select source_file, provider_account, line_number, payload, claimable_object(payload) as j
    from provider_lines
), fields as materialized (
    select
        source_file, provider_account, line_number, payload,
        json_extract_string(j, [
            '$.type', '$.created_at', '$.data.created_at', '$.data.email_id', '$.data.from',
            '$.data.bounce.type', '$.data.bounce.subType', '$.data.bounce.message',
            '$.data.bounce.diagnosticCode', '$.data.click.link', '$.data.click.timestamp',
            '$.data.suppressed.type', '$.data.suppressed.reason', '$.data.suppressed.message',
            '$.data.failed.reason', '$.data.tags.mailers_message_key',
            '$.data.tags.mailers_workspace', '$.data.tags.mailers_stream',
            '$.data.tags.mailers_campaign', '$.data.tags', '$.data.to', '$.data',
            '$.data.bounce', '$.data.click', '$.data.suppressed', '$.data.failed'
        ]) as v,
        json_type(j, [
            '$.type', '$.created_at', '$.data.created_at', '$.data.email_id', '$.data.from',
            '$.data.bounce.type', '$.data.bounce.subType', '$.data.bounce.message',
            '$.data.bounce.diagnosticCode', '$.data.click.link', '$.data.click.timestamp',
            '$.data.suppressed.type', '$.data.suppressed.reason', '$.data.suppressed.message',
            '$.data.failed.reason', '$.data.tags.mailers_message_key',
            '$.data.tags.mailers_workspace', '$.data.tags.mailers_stream',
            '$.data.tags.mailers_campaign', '$.data.tags', '$.data.to', '$.data',
            '$.data.bounce', '$.data.click', '$.data.suppressed', '$.data.failed'
        ]) as t
    from objects
    where j is not null
), envelopes as materialized (
    select
        source_file, provider_account, line_number, payload, v, t,
        coalesce(v[1], '') as name,
        nullif(v[4], '') as email_id,
        nullif(v[2], '') as created,
        -- parse(): listed(data.to), strings only (others would be str()'d)
        case when t[21] = 'ARRAY' then json_extract_string(v[21], '$[*]') else [] end as to_values,
        case when t[21] = 'ARRAY' then json_type(v[21], '$[*]') else [] end as to_types,
        case when t[9] = 'ARRAY' then json_extract_string(v[9], '$[*]') end as code_values,
        case when t[9] = 'ARRAY' then json_type(v[9], '$[*]') end as code_types
    from fields
    where text_typed(t[1]) and text_typed(t[2]) and text_typed(t[3]) and text_typed(t[4])
        and text_typed(t[5]) and text_typed(t[6]) and text_typed(t[7]) and text_typed(t[8])
        and text_typed(t[10]) and text_typed(t[11]) and text_typed(t[12]) and text_typed(t[13])
        and text_typed(t[14]) and text_typed(t[15])
        and ref_typed(t[16]) and ref_typed(t[17]) and ref_typed(t[18]) and ref_typed(t[19])
        and (t[20] is distinct from 'ARRAY' or v[20] = '[]')
        and (t[9] is null or t[9] in ('NULL', 'VARCHAR', 'ARRAY'))
        and keys_unique(v[20], t[20]) and keys_unique(v[22], t[22]) and keys_unique(v[23], t[23])
        and keys_unique(v[24], t[24]) and keys_unique(v[25], t[25]) and keys_unique(v[26], t[26])
        and nullif(v[4], '') is not null and nullif(v[2], '') is not null
        and (coalesce(v[5], '') = '' or regexp_full_match(
            v[5], '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*'))
), checked as (
    select * from envelopes
    where list_bool_and(list_transform(to_types || ['VARCHAR'], lambda c: c = 'VARCHAR'))
        and list_bool_and(list_transform(coalesce(code_types, []) || ['VARCHAR'], lambda c: c = 'VARCHAR'))
        and list_bool_and(list_transform(to_values || [''], lambda a: a = '' or regexp_full_match(
            a, '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')))
), recipients as (
    select
        * exclude (to_values, to_types, code_types),
        -- a click's own time, else when the event was created
        case when name = 'email.clicked' and coalesce(v[11], '') <> '' then v[11]
            else created end as raw_when,
        -- parse(): [address(r) for r in listed(data.to)] or [None]
        unnest(case when len(to_values) = 0 then [null::varchar]
            else list_transform(to_values, lambda a: nullif(a, '')) end) as recipient
    from checked
), events as (
    select
        *,
        iso_instant_or_utc(raw_when) as occurred_at,
        concat_ws('/', nullif(v[6], ''), nullif(v[7], '')) as bounce_kind,
        concat_ws(' ', nullif(v[8], ''), nullif(
            case when t[9] = 'ARRAY' then array_to_string(code_values, '; ') else v[9] end, ''
        )) as bounce_detail
    from recipients
)
select
    source_file,
    line_number,
    derived_event_id('resend', concat_ws(chr(31),
        name, email_id, coalesce(recipient, ''), created,
        case when name = 'email.clicked' then coalesce(v[10], '') end,
        case when name = 'email.clicked' then coalesce(v[11], '') end
    )) as event_id,
    case name
        when 'email.delivered' then 'delivered' when 'email.delivery_delayed' then 'deferred'
        when 'email.bounced' then 'bounced' when 'email.complained' then 'complained'
        when 'email.opened' then 'opened' when 'email.clicked' then 'clicked'
        when 'email.failed' then 'failed' when 'email.suppressed' then 'rejected'
        else 'unknown'
    end as event_type,
    case when name = 'email.bounced' then case coalesce(v[6], '')
        when 'Transient' then 'soft' when 'Temporary' then 'soft' when 'Undetermined' then 'soft'
        else 'hard' end
    end as bounce_class,
    occurred_at,
    'resend' as provider,
    provider_account,
    email_id as provider_message_id,
    ref_text(v[16], t[16]) as message_key,
    ref_text(v[17], t[17]) as workspace,
    ref_text(v[18], t[18]) as stream,
    ref_text(v[19], t[19]) as campaign,
    recipient,
    nullif(lower(regexp_extract(coalesce(v[5], ''), '@([^@]*)$', 1)), '') as sending_domain,
    case
        when name = 'email.bounced' then nullif(substring(
            case
                when bounce_kind <> '' and bounce_detail <> '' then bounce_kind || ': ' || bounce_detail
                else coalesce(nullif(bounce_kind, ''), bounce_detail)
            end, 1, 1000), '')
        when name = 'email.suppressed' then nullif(substring(
            concat_ws(': ', nullif(v[12], ''), nullif(v[13], ''), nullif(v[14], '')), 1, 1000), '')
        when name = 'email.failed' then nullif(v[15], '')
    end as reason,
    case when name = 'email.clicked' then nullif(v[10], '') end as url,
    payload as raw_payload
from events
where occurred_at is not null
