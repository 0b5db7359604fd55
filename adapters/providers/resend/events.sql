-- Resend webhook bodies as canonical events, set-based: the mapping of events.py's
-- parse() (one event per impacted recipient) for the bodies it can map exactly (see
-- adapters/bulk_events.py for the contract and macros). A line is left to parse() when it
-- has no email_id or created_at (its id is then a hash of the whole body), its time is
-- not plain ISO 8601, a field has a type parse() would stringify, a recipient or From is
-- not a bare address, its tags are the API's [{name, value}] list, or it has duplicate
-- keys. The classes mirror EVENT_TYPES and BOUNCE_CLASSES; the parity test
-- (tests/adapters/test_bulk_events.py) runs every key of those maps through both.
with objects as (
    select source_file, provider_account, line_number, payload, claimable_object(payload) as j
    from provider_lines
), envelopes as (
    select
        source_file, provider_account, line_number, payload, json_keys(j) as keys,
        from_json(j, '{"type": "JSON", "created_at": "JSON", "data": "JSON"}') as e
    from objects
    where j is not null
), bodies as (
    -- parse(): mapping(envelope.data), {} unless an object
    select
        *,
        case when left(e.data, 1) = '{' then from_json(e.data, '{
            "created_at": "JSON", "email_id": "JSON", "from": "JSON", "to": "JSON",
            "tags": "JSON", "bounce": "JSON", "click": "JSON", "suppressed": "JSON",
            "failed": "JSON"
        }') end as d
    from envelopes
    where unique_keys(keys) and keys_unique(e.data) and text_typed(e.type)
        and text_typed(e.created_at)
), details as (
    select
        *,
        case when left(d.bounce, 1) = '{' then from_json(d.bounce, '{
            "type": "JSON", "subType": "JSON", "message": "JSON", "diagnosticCode": "JSON"
        }') end as bounce,
        case when left(d.click, 1) = '{' then from_json(d.click,
            '{"link": "JSON", "timestamp": "JSON"}') end as click,
        case when left(d.suppressed, 1) = '{' then from_json(d.suppressed,
            '{"type": "JSON", "reason": "JSON", "message": "JSON"}') end as suppressed,
        case when left(d.failed, 1) = '{' then from_json(d.failed, '{"reason": "JSON"}') end
            as failed,
        case when left(d.tags, 1) = '{' then from_json(d.tags, '{
            "mailers_message_key": "JSON", "mailers_workspace": "JSON",
            "mailers_stream": "JSON", "mailers_campaign": "JSON"
        }') end as tags,
        -- parse(): listed(data.to), strings only (others would be str()'d)
        case when left(d.to, 1) = '[' then json_extract_string(d.to, '$[*]') else [] end
            as to_values,
        case when left(d.to, 1) = '[' then json_type(d.to, '$[*]') else [] end as to_types,
        coalesce(nullif(json_text(e.type), ''), '') as name,
        nullif(json_text(d.email_id), '') as email_id,
        nullif(json_text(e.created_at), '') as created,
        json_text(d."from") as sender
    from bodies
    where text_typed(d.created_at) and text_typed(d.email_id) and text_typed(d."from")
        and keys_unique(d.bounce) and keys_unique(d.click) and keys_unique(d.suppressed)
        and keys_unique(d.failed) and keys_unique(d.tags)
        and (left(d.tags, 1) is distinct from '[' or d.tags = '[]')
), checked as (
    select
        *,
        case when left(bounce.diagnosticCode, 1) = '['
            then json_extract_string(bounce.diagnosticCode, '$[*]') end as codes,
        case when left(bounce.diagnosticCode, 1) = '['
            then json_type(bounce.diagnosticCode, '$[*]') end as code_types
    from details
    where email_id is not null and created is not null
        and text_typed(bounce.type) and text_typed(bounce.subType)
        and text_typed(bounce.message)
        and (text_typed(bounce.diagnosticCode) or left(bounce.diagnosticCode, 1) = '[')
        and text_typed(click.link) and text_typed(click.timestamp)
        and text_typed(suppressed.type) and text_typed(suppressed.reason)
        and text_typed(suppressed.message) and text_typed(failed.reason)
        and ref_typed(tags.mailers_message_key) and ref_typed(tags.mailers_workspace)
        and ref_typed(tags.mailers_stream) and ref_typed(tags.mailers_campaign)
        and (coalesce(sender, '') = '' or regexp_full_match(
            sender, '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*'))
        and list_bool_and(list_transform(to_types, lambda c: c = 'VARCHAR') || [true])
        and list_bool_and(list_transform(to_values, lambda a: a = '' or regexp_full_match(
            a, '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')) || [true])
), recipients as (
    select
        *,
        json_text(click.link) as link,
        json_text(click.timestamp) as clicked_at,
        -- parse(): [address(r) for r in listed(data.to)] or [None]
        unnest(case when len(to_values) = 0 then [null::varchar]
            else list_transform(to_values, lambda a: nullif(a, '')) end) as recipient
    from checked
    where list_bool_and(list_transform(coalesce(code_types, []), lambda c: c = 'VARCHAR') || [true])
), events as (
    select
        *,
        -- a click's own time, else when the event was created
        iso_instant_or_utc(case when name = 'email.clicked' and coalesce(clicked_at, '') <> ''
            then clicked_at else created end) as occurred_at,
        json_text(bounce.type) as bounce_type,
        concat_ws('/', nullif(json_text(bounce.type), ''), nullif(json_text(bounce.subType), ''))
            as bounce_kind,
        concat_ws(' ', nullif(json_text(bounce.message), ''), nullif(
            case when codes is not null then array_to_string(codes, '; ')
            else json_text(bounce.diagnosticCode) end, ''
        )) as bounce_detail
    from recipients
)
select
    source_file,
    line_number,
    derived_event_id('resend', concat_ws(chr(31),
        name, email_id, coalesce(recipient, ''), created,
        case when name = 'email.clicked' then coalesce(link, '') end,
        case when name = 'email.clicked' then coalesce(clicked_at, '') end
    )) as event_id,
    case name
        when 'email.delivered' then 'delivered' when 'email.delivery_delayed' then 'deferred'
        when 'email.bounced' then 'bounced' when 'email.complained' then 'complained'
        when 'email.opened' then 'opened' when 'email.clicked' then 'clicked'
        when 'email.failed' then 'failed' when 'email.suppressed' then 'rejected'
        else 'unknown'
    end as event_type,
    case when name = 'email.bounced' then case coalesce(bounce_type, '')
        when 'Transient' then 'soft' when 'Temporary' then 'soft' when 'Undetermined' then 'soft'
        else 'hard' end
    end as bounce_class,
    occurred_at,
    'resend' as provider,
    provider_account,
    email_id as provider_message_id,
    ref_text(tags.mailers_message_key) as message_key,
    ref_text(tags.mailers_workspace) as workspace,
    ref_text(tags.mailers_stream) as stream,
    ref_text(tags.mailers_campaign) as campaign,
    recipient,
    nullif(lower(regexp_extract(coalesce(sender, ''), '@([^@]*)$', 1)), '') as sending_domain,
    case
        when name = 'email.bounced' then nullif(substring(
            case
                when bounce_kind <> '' and bounce_detail <> '' then bounce_kind || ': ' || bounce_detail
                else coalesce(nullif(bounce_kind, ''), bounce_detail)
            end, 1, 1000), '')
        when name = 'email.suppressed' then nullif(substring(concat_ws(': ',
            nullif(json_text(suppressed.type), ''), nullif(json_text(suppressed.reason), ''),
            nullif(json_text(suppressed.message), '')), 1, 1000), '')
        when name = 'email.failed' then nullif(json_text(failed.reason), '')
    end as reason,
    case when name = 'email.clicked' then nullif(link, '') end as url,
    payload as raw_payload
from events
where occurred_at is not null
