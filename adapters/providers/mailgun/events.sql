-- Mailgun webhook bodies ({"signature", "event-data"}) and polled events-API items (the
-- event itself) as canonical events, set-based: the mapping of events.py's parse() for the
-- events it can map exactly (see adapters/bulk_events.py for the contract and macros).
-- parse() stores json.dumps(event) as raw_payload, so the event's text must be one Python
-- writes the same way (py_dumps), with no duplicate key in any of its objects, and every
-- object at one of the paths below (an object elsewhere could hide one). A line is also
-- left to parse() when its timestamp is not a plain number of epoch seconds from 1970 to
-- 2099 with at most 6 decimals, a field has a type parse() would stringify, or its From
-- is not a plain address. The classes mirror EVENT_TYPES, FAILED_BY_REASON and
-- FAILED_BY_SEVERITY; the parity test (tests/adapters/test_bulk_events.py) runs every key
-- of those maps through both.
with objects as (
    select source_file, provider_account, line_number, claimable_object(payload) as j
    from provider_lines
), bodies as materialized (
    select
        source_file, provider_account, line_number, j, json_keys(j) as keys,
        from_json(j, '{"event-data": "JSON"}')."event-data" as wrapped
    from objects
    where j is not null
), events as (
    -- parse(): data.get("event-data", data), which must be an object
    select
        source_file, provider_account, line_number,
        case when list_contains(keys, 'event-data') then wrapped else json(j)::varchar end as e
    from bodies
    where unique_keys(keys)
        and (not list_contains(keys, 'event-data') or left(wrapped, 1) = '{')
), fields as materialized (
    select
        source_file, provider_account, line_number, e,
        py_dumps(e) as raw,
        json_keys(e) as keys,
        json_keys(e, [
            '$."message"', '$."message"."headers"', '$."user-variables"',
            '$."delivery-status"', '$."reject"', '$."flags"', '$."envelope"',
            '$."geolocation"', '$."client-info"', '$."storage"', '$."account"', '$."domain"'
        ]) as nested_keys,
        json_type(e, [
            '$."message"', '$."message"."headers"', '$."user-variables"',
            '$."delivery-status"', '$."reject"', '$."flags"', '$."envelope"',
            '$."geolocation"', '$."client-info"', '$."storage"', '$."account"', '$."domain"'
        ]) as nested_types,
        from_json(e, '{
            "event": "JSON", "id": "JSON", "timestamp": "JSON", "recipient": "JSON",
            "url": "JSON", "reason": "JSON", "severity": "JSON", "message": "JSON",
            "user-variables": "JSON", "delivery-status": "JSON", "reject": "JSON"
        }') as f
    from events
), typed as (
    select
        *,
        case when left(f.message, 1) = '{'
            then from_json(f.message, '{"headers": "JSON"}').headers end as headers_fragment,
        case when left(f."user-variables", 1) = '{' then from_json(f."user-variables", '{
            "mailers_message_key": "JSON", "mailers_workspace": "JSON",
            "mailers_stream": "JSON", "mailers_campaign": "JSON"
        }') end as v,
        case when left(f."delivery-status", 1) = '{' then from_json(f."delivery-status",
            '{"code": "JSON", "message": "JSON", "description": "JSON"}') end as status,
        case when left(f.reject, 1) = '{'
            then from_json(f.reject, '{"reason": "JSON", "description": "JSON"}') end as reject,
        json_text(f.event) as name,
        json_text(f.timestamp) as seconds
    from fields
    where raw is not null and unique_keys(keys)
        and list_bool_and(list_transform(nested_keys, lambda k: k is null or unique_keys(k)))
        and char_count(e, '{') = 1 + len(list_filter(nested_types, lambda t: t = 'OBJECT'))
        -- _occurred_at(): a number of epoch seconds (microseconds as Python rounds them)
        and json_kind(f.timestamp) in ('INTEGER', 'DOUBLE')
        and regexp_full_match(f.timestamp, '(0|[1-9][0-9]{0,9})([.][0-9]{1,6})?')
        and try_cast(f.timestamp as double) < 4102444800
        and text_typed(f.event) and text_typed(f.recipient) and text_typed(f.url)
        and text_typed(f.reason) and text_typed(f.severity)
), checked as (
    select
        *,
        case when left(headers_fragment, 1) = '{'
            then from_json(headers_fragment, '{"message-id": "JSON", "from": "JSON"}') end as h,
        make_timestamp(cast(split_part(seconds, '.', 1) as bigint) * 1000000
            + cast(rpad(split_part(seconds, '.', 2), 6, '0') as bigint)) as occurred_at
    from typed
    where ref_typed(v.mailers_message_key) and ref_typed(v.mailers_workspace)
        and ref_typed(v.mailers_stream) and ref_typed(v.mailers_campaign)
        and (status.code is null or json_kind(status.code) in ('INTEGER', 'VARCHAR'))
        and text_typed(status.message) and text_typed(status.description)
        and text_typed(reject.reason) and text_typed(reject.description)
), classified as (
    select
        *,
        -- parse(): text(headers["message-id"]) stripped of <>, which may leave ''
        trim(nullif(json_text(h."message-id"), ''), '<>') as message_id,
        json_text(h."from") as sender,
        nullif(json_text(f.recipient), '') as recipient,
        case
            when name = 'failed' then case
                when json_text(f.reason) = 'old' then 'bounced'
                when json_text(f.reason) = 'suppress-bounce' then 'bounced'
                when json_text(f.reason) in ('suppress-unsubscribe', 'suppress-complaint')
                    then 'failed'
                when json_text(f.severity) = 'permanent' then 'bounced'
                when json_text(f.severity) = 'temporary' then 'deferred'
                else 'failed' end
            when name = 'delivered' then 'delivered' when name = 'rejected' then 'rejected'
            when name = 'opened' then 'opened' when name = 'clicked' then 'clicked'
            when name = 'unsubscribed' then 'unsubscribed'
            when name = 'complained' then 'complained'
            else 'unknown'
        end as event_type,
        case when name = 'failed' then case
            when json_text(f.reason) = 'old' then 'soft'
            when json_text(f.reason) = 'suppress-bounce' then 'hard'
            when json_text(f.reason) in ('suppress-unsubscribe', 'suppress-complaint') then null
            when json_text(f.severity) = 'permanent' then 'hard'
        end end as bounce_class,
        -- _reason() of a failed event: the status code (unless 0 or ''), its message or
        -- description, then severity/reason
        concat_ws(' ',
            case when json_kind(status.code) = 'INTEGER' and status.code <> '0' then status.code
                when json_kind(status.code) = 'VARCHAR' then nullif(json_text(status.code), '')
            end,
            coalesce(nullif(json_text(status.message), ''),
                nullif(json_text(status.description), ''))
        ) as failure_detail,
        concat_ws('/', nullif(json_text(f.severity), ''), nullif(json_text(f.reason), ''))
            as failure_tags
    from checked
    where text_typed(h."message-id") and text_typed(h."from")
        and (
            coalesce(json_text(h."from"), '') = ''
            or regexp_full_match(json_text(h."from"),
                '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')
            or regexp_full_match(json_text(h."from"),
                '[A-Za-z0-9]+( [A-Za-z0-9]+)* '
                || '<[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*>')
        )
)
select
    source_file,
    line_number,
    -- Mailgun's id is unique within a day: the UTC day makes it unique
    case when left(f.id, 1) = '"' and json_text(f.id) <> ''
        then 'mailgun:' || strftime(occurred_at, '%Y%m%d') || ':' || json_text(f.id)
        else derived_event_id('mailgun', concat_ws(chr(31),
            coalesce(name, 'None'), seconds, coalesce(recipient, ''), coalesce(message_id, '')))
    end as event_id,
    event_type,
    bounce_class,
    occurred_at,
    'mailgun' as provider,
    provider_account,
    message_id as provider_message_id,
    ref_text(v.mailers_message_key) as message_key,
    ref_text(v.mailers_workspace) as workspace,
    ref_text(v.mailers_stream) as stream,
    ref_text(v.mailers_campaign) as campaign,
    recipient,
    nullif(lower(trim(regexp_extract(coalesce(sender, ''), '@([^@>]*)>?$', 1))), '')
        as sending_domain,
    case
        when name = 'failed' then case
            when failure_detail <> '' and failure_tags <> ''
                then failure_detail || ' (' || failure_tags || ')'
            else coalesce(nullif(failure_detail, ''), nullif(failure_tags, ''), 'delivery failed')
        end
        when name = 'rejected' then coalesce(nullif(concat_ws(': ',
            nullif(json_text(reject.reason), ''), nullif(json_text(reject.description), '')), ''),
            'rejected by Mailgun')
        when event_type = 'complained'
            then 'the recipient reported the message as spam (feedback loop)'
    end as reason,
    case when name = 'clicked' then nullif(json_text(f.url), '') end as url,
    raw as raw_payload
from classified
