-- Postmark webhook records as canonical events, set-based: the mapping of events.py's
-- parse() for the records it can map exactly (see adapters/bulk_events.py for the
-- contract and macros). A line is left to parse() when its RecordType is absent or has
-- no timestamp field, its time is naive (US Eastern) or not plain ISO 8601, a field has
-- a type parse() would stringify, its From is not a plain address, or it has duplicate
-- keys. The classes below mirror RECORD_TYPES, BOUNCE_TYPES and SUBSCRIPTION_CHANGES; the
-- parity test (tests/adapters/test_bulk_events.py) runs every key of those maps through
-- both.
with fields as (
    -- One parse: every field read, as its JSON text (struct keys are case-insensitive,
    -- so MessageId, the other spelling of MessageID, is read on its own when needed).
    select
        source_file, provider_account, line_number, payload, json_keys(j) as keys,
        from_json(j, '{
            "RecordType": "JSON", "Type": "JSON", "MessageID": "JSON", "Recipient": "JSON",
            "Email": "JSON", "DeliveredAt": "JSON", "BouncedAt": "JSON", "ReceivedAt": "JSON",
            "ChangedAt": "JSON", "ID": "JSON", "Name": "JSON", "Details": "JSON",
            "Description": "JSON", "SuppressionReason": "JSON", "Origin": "JSON",
            "OriginalLink": "JSON", "From": "JSON", "SuppressSending": "JSON",
            "Metadata": "JSON"
        }') as f
    from (select *, claimable_object(payload) as j from provider_lines)
    where j is not null
), typed as (
    -- Only lines whose fields have the types parse() reads as they are.
    select *
    from fields
    where left(f.RecordType, 1) = '"'
        and text_typed(f.Type) and text_typed(f.MessageID) and text_typed(f.Recipient)
        and text_typed(f.Email) and text_typed(f.Name) and text_typed(f.Details)
        and text_typed(f.Description) and text_typed(f.SuppressionReason)
        and text_typed(f.Origin) and text_typed(f.OriginalLink) and text_typed(f."From")
        and (f.ID is null or left(f.ID, 1) = '"' or json_kind(f.ID) = 'INTEGER')
        and (f.SuppressSending is null or f.SuppressSending in ('true', 'false'))
        and (f.Metadata is null or left(f.Metadata, 1) <> '{' or keys_unique(f.Metadata))
        and unique_keys(keys)
), texts as (
    select
        source_file, provider_account, line_number, payload, f.ID as id_fragment,
        f.SuppressSending as suppress_fragment,
        json_text(f.RecordType) as record,
        json_text(f.Type) as bounce_type,
        json_text(f.MessageID) as message_id_text,
        coalesce(nullif(json_text(f.Recipient), ''), nullif(json_text(f.Email), '')) as recipient,
        json_text(f.ID) as bounce_id,
        json_text(f.Name) as name, json_text(f.Details) as details,
        json_text(f.Description) as description,
        json_text(f.SuppressionReason) as suppression_reason, json_text(f.Origin) as origin,
        json_text(f.OriginalLink) as link, json_text(f."From") as sender,
        case json_text(f.RecordType)
            when 'Delivery' then f.DeliveredAt when 'Bounce' then f.BouncedAt
            when 'SpamComplaint' then f.BouncedAt when 'Open' then f.ReceivedAt
            when 'Click' then f.ReceivedAt when 'SubscriptionChange' then f.ChangedAt
        end as when_fragment,
        case when left(f.Metadata, 1) = '{' then from_json(f.Metadata, '{
            "mailers_message_key": "JSON", "mailers_workspace": "JSON",
            "mailers_stream": "JSON", "mailers_campaign": "JSON", "mailers_domain": "JSON"
        }') end as m
    from typed
), checked as (
    select
        *,
        json_text(when_fragment) as raw_when,
        iso_instant(json_text(when_fragment)) as occurred_at,
        -- parse(): MessageID, else the MessageId spelling (Delivery uses both)
        coalesce(nullif(message_id_text, ''), case when coalesce(message_id_text, '') = ''
            then nullif(json_extract_string(payload, '$.MessageId'), '') end) as message_id,
        case when coalesce(message_id_text, '') = ''
            then json_type(payload, '$.MessageId') end as other_spelling
    from texts
    where left(when_fragment, 1) = '"'
        and text_typed(m.mailers_domain)
        and ref_typed(m.mailers_message_key) and ref_typed(m.mailers_workspace)
        and ref_typed(m.mailers_stream) and ref_typed(m.mailers_campaign)
        and (
            coalesce(sender, '') = ''
            or regexp_full_match(sender,
                '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')
            or regexp_full_match(sender,
                '[A-Za-z0-9]+( [A-Za-z0-9]+)* '
                || '<[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*>')
        )
), classified as (
    select
        *,
        case
            when record = 'Bounce' then case coalesce(bounce_type, '')
                when 'HardBounce' then 'bounced' when 'BadEmailAddress' then 'bounced'
                when 'ManuallyDeactivated' then 'bounced' when 'SoftBounce' then 'bounced'
                when 'DnsError' then 'bounced' when 'SpamNotification' then 'bounced'
                when 'Blocked' then 'bounced' when 'DMARCPolicy' then 'bounced'
                when 'Unknown' then 'bounced' when 'Transient' then 'deferred'
                when 'SpamComplaint' then 'complained' when 'Unsubscribe' then 'unsubscribed'
                when 'SMTPApiError' then 'failed' when 'TemplateRenderingFailed' then 'failed'
                when 'Unconfirmed' then 'failed' else 'unknown' end
            when record = 'SubscriptionChange' then case
                when suppress_fragment is distinct from 'true' then 'unknown'
                else case coalesce(suppression_reason, '')
                    when 'ManualSuppression' then 'unsubscribed'
                    when 'SpamComplaint' then 'complained'
                    when 'HardBounce' then 'bounced' else 'unknown' end end
            when record = 'Delivery' then 'delivered' when record = 'SpamComplaint' then 'complained'
            when record = 'Open' then 'opened' when record = 'Click' then 'clicked'
        end as event_type,
        case
            when record = 'Bounce' and bounce_type in (
                'HardBounce', 'BadEmailAddress', 'ManuallyDeactivated') then 'hard'
            when record = 'Bounce' and bounce_type in (
                'SoftBounce', 'DnsError', 'SpamNotification', 'Blocked', 'DMARCPolicy', 'Unknown'
            ) then 'soft'
            when record = 'SubscriptionChange' and suppress_fragment = 'true'
                and suppression_reason = 'HardBounce' then 'hard'
        end as bounce_class
    from checked
    where occurred_at is not null and text_typed(other_spelling)
)
select
    source_file,
    line_number,
    case
        -- parse(): a Bounce ID that is a non-empty string or a non-zero integer
        when record in ('Bounce', 'SpamComplaint') and (
            (left(id_fragment, 1) = '"' and bounce_id <> '')
            or (left(id_fragment, 1) <> '"' and bounce_id <> '0'))
            then 'postmark:bounce:' || bounce_id
        -- concat_ws skips the nulls: a click's link and a subscription change's
        -- SuppressSending are parts of those records' ids only
        else derived_event_id('postmark', concat_ws(chr(31),
            record, coalesce(message_id, ''), coalesce(recipient, ''), raw_when,
            case when record = 'Click' then coalesce(link, '') end,
            case when record = 'SubscriptionChange' then
                case suppress_fragment when 'true' then 'True' when 'false' then 'False'
                else 'None' end
            end))
    end as event_id,
    event_type,
    bounce_class,
    occurred_at,
    'postmark' as provider,
    provider_account,
    message_id as provider_message_id,
    ref_text(m.mailers_message_key) as message_key,
    ref_text(m.mailers_workspace) as workspace,
    ref_text(m.mailers_stream) as stream,
    ref_text(m.mailers_campaign) as campaign,
    recipient,
    coalesce(
        nullif(json_text(m.mailers_domain), ''),
        nullif(lower(trim(regexp_extract(sender, '@([^@>]*)>?$', 1))), '')
    ) as sending_domain,
    case
        when record in ('Bounce', 'SpamComplaint') then nullif(substring(coalesce(
            nullif(concat_ws(': ', nullif(py_strip(coalesce(name, '')), ''),
                nullif(py_strip(coalesce(details, '')), '')), ''),
            coalesce(description, '')
        ), 1, 1000), '')
        when record = 'SubscriptionChange'
            and (coalesce(suppression_reason, '') <> '' or coalesce(origin, '') <> '')
            then coalesce(nullif(suppression_reason, ''), 'reactivated')
                || ' (origin: ' || coalesce(nullif(origin, ''), 'unknown') || ')'
    end as reason,
    case when record = 'Click' then nullif(link, '') end as url,
    payload as raw_payload
from classified
