-- SendGrid Event Webhook bodies (a JSON array of events, or one event object) as
-- canonical events, set-based: the mapping of events.py's parse() (one event per element)
-- for the bodies it can map exactly (see adapters/bulk_events.py for the contract and
-- macros). parse() stores json.dumps(element) as each event's raw_payload, so an
-- element's text must be one Python writes the same way (py_dumps), with no duplicate
-- key and no object but its "pool" and a click's "url_offset". A body is left to parse() whole when any element is
-- not an object, has no sg_event_id text (its id is then a hash of the sorted element),
-- its timestamp is not a plain number of epoch seconds from 1970 to 2099 with at most 6
-- decimals (parse() times it by the clock), or a field has a type parse() would
-- stringify. The classes mirror EVENT_TYPES, BOUNCE_TYPES and BOUNCE_CLASSIFICATIONS;
-- the parity test (tests/adapters/test_bulk_events.py) runs every key of those maps
-- through both.
with bodies as (
    select
        source_file, provider_account, line_number,
        case
            when starts_with(payload, '{') then [json(claimable_object(payload))::varchar]
            -- claimable_object's checks, for arrays (nesting: per element, below)
            when starts_with(payload, '[') and json_valid(payload)
                and not regexp_matches(payload,
                    ',[ \t\n\r]*[}\]]|(?i:[:,\[][ \t\n\r]*-?(nan|inf))')
                and (strlen(payload) < 1000 or not regexp_matches(payload, '[0-9]{1000}'))
                then from_json(payload, '["JSON"]')::varchar[]
        end as elements
    from provider_lines
), elements as (
    select
        source_file, provider_account, line_number,
        unnest(elements) as e, generate_subscripts(elements, 1) as element_number
    from bodies
    where len(elements) > 0
), fields as materialized (
    select
        *,
        py_dumps(e) as raw,
        json_keys(e) as keys,
        json_keys(e, ['$."pool"', '$."url_offset"']) as nested_keys,
        json_type(e, ['$."pool"', '$."url_offset"']) as nested_types,
        from_json(e, '{
            "event": "JSON", "sg_event_id": "JSON", "sg_message_id": "JSON",
            "timestamp": "JSON", "email": "JSON", "url": "JSON", "reason": "JSON",
            "response": "JSON", "type": "JSON", "bounce_classification": "JSON",
            "mailers_message_key": "JSON", "mailers_workspace": "JSON",
            "mailers_stream": "JSON", "mailers_campaign": "JSON"
        }') as f
    from elements
), checked as (
    select
        *,
        left(e, 1) = '{' and raw is not null and unique_keys(keys)
        and (strlen(e) < 500 or char_count(e, '[') + char_count(e, '{') < 500)
        and char_count(e, '{') = 1 + len(list_filter(nested_types, lambda t: t = 'OBJECT'))
        and list_bool_and(list_transform(nested_keys, lambda k: k is null or unique_keys(k)))
        and left(f.sg_event_id, 1) = '"' and json_text(f.sg_event_id) <> ''
        -- _occurred_at(): a number of epoch seconds (microseconds as Python rounds them)
        and json_kind(f.timestamp) in ('INTEGER', 'DOUBLE')
        and regexp_full_match(f.timestamp, '(0|[1-9][0-9]{0,9})([.][0-9]{1,6})?')
        and try_cast(f.timestamp as double) < 4102444800
        and text_typed(f.sg_message_id) and text_typed(f.email) and text_typed(f.url)
        and text_typed(f.reason) and text_typed(f.response)
        and text_typed(f.bounce_classification)
        and ref_typed(f.mailers_message_key) and ref_typed(f.mailers_workspace)
        and ref_typed(f.mailers_stream) and ref_typed(f.mailers_campaign) as claimable
    from fields
), claimed as (
    -- all of a body's events or none
    select *
    from (
        select *, bool_and(coalesce(claimable, false))
            over (partition by source_file, line_number) as whole
        from checked
    )
    where whole
), events as (
    select
        *,
        -- parse(): str(element.get("event", "")): only a string can name a type
        case when left(f.event, 1) = '"' then json_text(f.event) else '' end as name,
        json_text(f.timestamp) as seconds,
        ref_text(f.mailers_message_key) as message_key,
        nullif(json_text(f.sg_message_id), '') as sg_message_id
    from claimed
), classified as (
    select
        *,
        case name
            when 'delivered' then 'delivered' when 'deferred' then 'deferred'
            when 'bounce' then 'bounced' when 'dropped' then 'rejected'
            when 'spamreport' then 'complained' when 'open' then 'opened'
            when 'click' then 'clicked' when 'unsubscribe' then 'unsubscribed'
            when 'group_unsubscribe' then 'unsubscribed'
            else 'unknown'
        end as event_type,
        case when name = 'bounce' then case
            when json_text(f.bounce_classification) = 'Invalid Address' then 'hard'
            when json_text(f.bounce_classification) in ('Technical Failure', 'Content',
                'Reputation', 'Frequency or Volume Too High') then 'soft'
            when left(f.type, 1) = '"' and json_text(f.type) = 'blocked' then 'soft'
            else 'hard' end
        end as bounce_class,
        case name
            when 'bounce' then nullif(json_text(f.reason), '')
            when 'dropped' then nullif(json_text(f.reason), '')
            when 'deferred' then nullif(json_text(f.response), '')
        end as explanation,
        nullif(json_text(f.bounce_classification), '') as classification
    from events
)
select
    source_file,
    line_number,
    'sendgrid:' || json_text(f.sg_event_id) as event_id,
    event_type,
    bounce_class,
    make_timestamp(cast(split_part(seconds, '.', 1) as bigint) * 1000000
        + cast(rpad(split_part(seconds, '.', 2), 6, '0') as bigint)) as occurred_at,
    'sendgrid' as provider,
    provider_account,
    -- sending.provider_message_id(): the X-Message-Id (sg_message_id's first part) and key
    case when message_key is not null then split_part(sg_message_id, '.', 1) || ':' || message_key
        else sg_message_id end as provider_message_id,
    message_key,
    ref_text(f.mailers_workspace) as workspace,
    ref_text(f.mailers_stream) as stream,
    ref_text(f.mailers_campaign) as campaign,
    nullif(json_text(f.email), '') as recipient,
    null::varchar as sending_domain,
    case
        when name = 'spamreport'
            then 'SendGrid spamreport: the recipient marked the message as spam'
        when explanation is not null and classification is not null
            then explanation || ' (' || classification || ')'
        else coalesce(explanation, classification)
    end as reason,
    case when event_type = 'clicked' then nullif(json_text(f.url), '') end as url,
    raw as raw_payload
from classified
