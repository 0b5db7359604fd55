-- SES event records in their SNS envelope (a Notification whose Message is the record as
-- JSON text) as canonical events, set-based: the mapping of events.py's parse() (one
-- event per recipient the record names) for the records it can map exactly (see
-- adapters/bulk_events.py for the contract and macros). raw_payload is the Message text
-- itself. Left to parse(): subscription confirmations (no events), other SNS types and
-- bare records; Subscription records; a record whose first time field is not plain ISO
-- 8601, where a field has a type parse() would stringify, an address is not a bare one,
-- a header name is not ASCII, or an object parse() reads has duplicate keys. The classes
-- mirror EVENT_TYPES, BOUNCE_CLASSES and NOT_COMPLAINTS; the parity test
-- (tests/adapters/test_bulk_events.py) runs every key of those maps through both.
with objects as (
    select source_file, provider_account, line_number, claimable_object(payload) as j
    from provider_lines
), envelopes as materialized (
    select
        source_file, provider_account, line_number, json_keys(j) as keys,
        from_json(j, '{"Type": "JSON", "Message": "JSON", "MessageId": "JSON",
            "Timestamp": "JSON"}') as n
    from objects
    where j is not null
), notifications as (
    -- parse(): an SNS message ("Type", no record keys) of type Notification, Message text
    select *, json_text(n.Message) as message
    from envelopes
    where unique_keys(keys) and list_contains(keys, 'Type')
        and not list_contains(keys, 'eventType') and not list_contains(keys, 'notificationType')
        and json_text(n.Type) = 'Notification' and left(n.Type, 1) = '"'
        and left(n.Message, 1) = '"' and not contains(n.Message, '\u0000')
        and text_typed(n.MessageId) and text_typed(n.Timestamp)
), records as materialized (
    select
        source_file, provider_account, line_number, n, message, json_keys(r) as record_keys,
        from_json(r, '{
            "eventType": "JSON", "notificationType": "JSON", "mail": "JSON",
            "bounce": "JSON", "complaint": "JSON", "delivery": "JSON", "deliveryDelay": "JSON",
            "send": "JSON", "reject": "JSON", "open": "JSON", "click": "JSON",
            "failure": "JSON"
        }') as rec
    from (select *, claimable_object(message) as r from notifications)
    where r is not null
), named as (
    select
        *,
        coalesce(nullif(json_text(rec.eventType), ''), nullif(json_text(rec.notificationType), ''),
            '') as name
    from records
    where unique_keys(record_keys) and not list_contains(record_keys, '')
        and text_typed(rec.eventType) and text_typed(rec.notificationType)
), details as (
    select
        *,
        -- parse(): mapping(record[DETAIL_KEYS[name]]) and mapping(record["mail"])
        case name
            when 'Bounce' then rec.bounce when 'Complaint' then rec.complaint
            when 'Delivery' then rec.delivery when 'DeliveryDelay' then rec.deliveryDelay
            when 'Send' then rec.send when 'Reject' then rec.reject when 'Open' then rec.open
            when 'Click' then rec.click when 'Rendering Failure' then rec.failure
            when 'RenderingFailure' then rec.failure
        end as detail_fragment
    from named
    where name <> 'Subscription'
), fields as materialized (
    select
        *,
        case when left(detail_fragment, 1) = '{' then from_json(detail_fragment, '{
            "timestamp": "JSON", "bounceType": "JSON", "bounceSubType": "JSON",
            "bouncedRecipients": "JSON", "delayType": "JSON", "delayedRecipients": "JSON",
            "complaintFeedbackType": "JSON", "complaintSubType": "JSON",
            "complainedRecipients": "JSON", "reason": "JSON", "templateName": "JSON",
            "errorMessage": "JSON", "recipients": "JSON", "link": "JSON", "feedbackId": "JSON"
        }') end as d,
        case when left(rec.mail, 1) = '{' then from_json(rec.mail, '{
            "timestamp": "JSON", "source": "JSON", "messageId": "JSON", "destination": "JSON",
            "headers": "JSON", "tags": "JSON"
        }') end as m
    from details
    where keys_unique(detail_fragment) and keys_unique(rec.mail)
), parts as (
    select
        *,
        case when left(m.tags, 1) = '{' then from_json(m.tags, '{
            "mailers_message_key": "JSON", "mailers_workspace": "JSON", "mailers_stream": "JSON",
            "mailers_campaign": "JSON", "ses:from-domain": "JSON"
        }') end as t,
        -- _header(): the objects of mail.headers, the first named X-Mailers-Message-Key
        case when left(m.headers, 1) = '[' then list_transform(
            list_filter(from_json(m.headers, '["JSON"]')::varchar[], lambda h: left(h, 1) = '{'),
            lambda h: {'fragment': h, 'f': from_json(h, '{"name": "JSON", "value": "JSON"}')})
        else [] end as headers,
        -- the per-recipient list of this record's type, as (address, status, diagnostic)
        case when name in ('Bounce', 'DeliveryDelay', 'Complaint') then case name
            when 'Bounce' then d.bouncedRecipients when 'DeliveryDelay' then d.delayedRecipients
            else d.complainedRecipients end end as per_recipient_fragment,
        case when name = 'Delivery' and left(d.recipients, 1) = '[' and d.recipients <> '[]'
            then d.recipients else m.destination end as addresses_fragment,
        json_text(d.timestamp) as detail_time,
        json_text(m.timestamp) as mail_time,
        json_text(n.Timestamp) as envelope_time
    from fields
    where text_typed(d.timestamp) and text_typed(d.bounceType) and text_typed(d.bounceSubType)
        and text_typed(d.delayType) and text_typed(d.complaintFeedbackType)
        and text_typed(d.complaintSubType) and text_typed(d.reason)
        and text_typed(d.templateName) and text_typed(d.errorMessage) and text_typed(d.link)
        and text_typed(d.feedbackId) and text_typed(m.timestamp) and text_typed(m.source)
        and text_typed(m.messageId)
        and (d.recipients is null or left(d.recipients, 1) = '[')
        and (m.destination is null or left(m.destination, 1) = '[')
        and keys_unique(m.tags)
), listed as (
    select
        *,
        case when left(per_recipient_fragment, 1) = '[' then list_transform(
            list_filter(from_json(per_recipient_fragment, '["JSON"]')::varchar[],
                lambda r: left(r, 1) = '{'),
            lambda r: {'fragment': r, 'f': from_json(r,
                '{"emailAddress": "JSON", "status": "JSON", "diagnosticCode": "JSON"}')})
        else [] end as per_recipient,
        case when left(addresses_fragment, 1) = '['
            then from_json(addresses_fragment, '["JSON"]')::varchar[] else [] end as addresses,
        list_filter(headers, lambda h: left(h.f.name, 1) = '"'
            and lower(json_text(h.f.name)) = 'x-mailers-message-key') as key_headers,
        -- parse(): the first time field set (each must be one it reads the same way)
        case
            when coalesce(detail_time, '') <> '' then detail_time
            when coalesce(mail_time, '') <> '' then mail_time
            when coalesce(envelope_time, '') <> '' then envelope_time
        end as when_text
    from parts
    where list_bool_and(list_transform(headers, lambda h: keys_unique(h.fragment)
        and (left(h.f.name, 1) is distinct from '"' or strlen(json_text(h.f.name))
            = length(json_text(h.f.name)))) || [true])
), checked as (
    select
        *,
        iso_instant_or_utc(when_text) as occurred_at,
        -- _tag(): a list's first value or a text; mailers_message_key falls back on the header
        case when left(t.mailers_message_key, 1) = '[' then json_extract_string(t.mailers_message_key, '$[0]')
            when left(t.mailers_message_key, 1) = '"' then json_text(t.mailers_message_key)
        end as key_tag,
        key_headers[1].f.value as key_header
    from listed
    where when_text is not null and left(when_text, 4) between '1000' and '9998'
        and list_bool_and(list_transform(per_recipient, lambda r: keys_unique(r.fragment)
            and text_typed(r.f.status) and text_typed(r.f.diagnosticCode)
            and text_typed(r.f.emailAddress)
            and (coalesce(json_text(r.f.emailAddress), '') = '' or regexp_full_match(
                json_text(r.f.emailAddress),
                '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')))
            || [true])
        and list_bool_and(list_transform(addresses, lambda a: a is null
            or (left(a, 1) = '"' and (json_text(a) = '' or regexp_full_match(json_text(a),
                '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*'))))
            || [true])
        and (
            coalesce(json_text(m.source), '') = ''
            or regexp_full_match(json_text(m.source),
                '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')
            or regexp_full_match(json_text(m.source),
                '[A-Za-z0-9]+( [A-Za-z0-9]+)* '
                || '<[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*>')
        )
), tagged as (
    select
        *,
        -- _tag() reads str() of a list's first value: only a text is claimed
        list_bool_and(list_transform([t.mailers_message_key, t.mailers_workspace,
            t.mailers_stream, t.mailers_campaign, t."ses:from-domain"], lambda v: v is null
            or left(v, 1) <> '[' or json_array_length(v) = 0
            or json_type(v, '$[0]') = 'VARCHAR')) as tags_typed,
        -- metadata[key] or _header(): a tag that is not empty wins, even blank; the
        -- header's value is read as str(): only a text is claimed
        case when coalesce(key_tag, '') <> '' then key_tag else json_text(key_header) end
            as key_text,
        coalesce(key_tag, '') <> '' or len(key_headers) = 0 or left(key_header, 1) = '"'
            as key_typed
    from checked
    where occurred_at is not null
), recipients as (
    select
        *,
        -- _recipients(): (recipient, reason) pairs
        unnest(case
            when name in ('Bounce', 'DeliveryDelay', 'Complaint') then
                case when len(per_recipient) = 0 then [{'recipient': null::varchar,
                    'reason': nullif(left(summary, 1000), '')}]
                else list_transform(per_recipient, lambda r: {
                    'recipient': nullif(json_text(r.f.emailAddress), ''),
                    'reason': nullif(left(case when name = 'Complaint' then summary
                        else concat_ws('; ', nullif(summary, ''),
                            nullif(json_text(r.f.status), ''),
                            nullif(json_text(r.f.diagnosticCode), '')) end, 1000), '')})
                end
            else
                case when len(addresses) = 0 then [{'recipient': null::varchar, 'reason': reason}]
                else list_transform(addresses, lambda a: {
                    'recipient': nullif(json_text(a), ''), 'reason': reason}) end
        end) as pair
    from (
        select
            *,
            case name
                when 'Bounce' then concat_ws('/', nullif(json_text(d.bounceType), ''),
                    nullif(json_text(d.bounceSubType), ''))
                when 'DeliveryDelay' then coalesce(json_text(d.delayType), '')
                when 'Complaint' then left(concat_ws('; ', 'complaint',
                    nullif(json_text(d.complaintFeedbackType), ''),
                    nullif(json_text(d.complaintSubType), '')), 1000)
            end as summary,
            nullif(left(case name
                when 'Reject' then coalesce(json_text(d.reason), '')
                when 'Rendering Failure' then concat_ws('; ', nullif(json_text(d.templateName), ''),
                    nullif(json_text(d.errorMessage), ''))
                when 'RenderingFailure' then concat_ws('; ', nullif(json_text(d.templateName), ''),
                    nullif(json_text(d.errorMessage), ''))
            end, 1000), '') as reason,
            nullif(json_text(m.messageId), '') as message_id,
            coalesce(nullif(json_text(m.messageId), ''), nullif(json_text(n.MessageId), ''), '')
                as anchor
        from tagged
        where tags_typed and key_typed
    )
), classified as (
    select
        *,
        case name
            when 'Delivery' then 'delivered' when 'Bounce' then 'bounced'
            when 'DeliveryDelay' then 'deferred'
            when 'Complaint' then case when json_text(d.complaintFeedbackType) = 'not-spam'
                then 'unknown' else 'complained' end
            when 'Reject' then 'rejected' when 'Rendering Failure' then 'failed'
            when 'RenderingFailure' then 'failed' when 'Open' then 'opened'
            when 'Click' then 'clicked'
            else 'unknown'
        end as event_type
    from recipients
)
select
    source_file,
    line_number,
    case when anchor <> '' then derived_event_id('ses', concat_ws(chr(31),
            anchor, name, coalesce(nullif(detail_time, ''), nullif(mail_time, ''), ''),
            coalesce(pair.recipient, ''),
            coalesce(nullif(json_text(d.link), ''), nullif(json_text(d.feedbackId), ''), '')))
        else derived_event_id('ses', concat_ws(chr(31), message, coalesce(pair.recipient, '')))
    end as event_id,
    event_type,
    case when event_type = 'bounced' then
        case when json_text(d.bounceType) = 'Permanent' then 'hard' else 'soft' end
    end as bounce_class,
    occurred_at,
    'ses' as provider,
    provider_account,
    message_id as provider_message_id,
    nullif(py_strip(key_text), '') as message_key,
    nullif(py_strip(case when left(t.mailers_workspace, 1) = '['
        then json_extract_string(t.mailers_workspace, '$[0]')
        when left(t.mailers_workspace, 1) = '"' then json_text(t.mailers_workspace) end), '')
        as workspace,
    nullif(py_strip(case when left(t.mailers_stream, 1) = '['
        then json_extract_string(t.mailers_stream, '$[0]')
        when left(t.mailers_stream, 1) = '"' then json_text(t.mailers_stream) end), '')
        as stream,
    nullif(py_strip(case when left(t.mailers_campaign, 1) = '['
        then json_extract_string(t.mailers_campaign, '$[0]')
        when left(t.mailers_campaign, 1) = '"' then json_text(t.mailers_campaign) end), '')
        as campaign,
    pair.recipient as recipient,
    -- domain_of(mail.source), else the ses:from-domain tag as it is (even empty)
    coalesce(
        nullif(lower(trim(regexp_extract(coalesce(json_text(m.source), ''), '@([^@>]*)>?$', 1))), ''),
        case when left(t."ses:from-domain", 1) = '['
            then json_extract_string(t."ses:from-domain", '$[0]')
            when left(t."ses:from-domain", 1) = '"' then json_text(t."ses:from-domain") end
    ) as sending_domain,
    pair.reason as reason,
    case when name = 'Click' then nullif(json_text(d.link), '') end as url,
    message as raw_payload
from classified
