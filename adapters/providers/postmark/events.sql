-- Postmark webhook records as canonical events, set-based: the mapping of events.py's
-- parse() for the records it can map exactly (see adapters/bulk_events.py for the
-- contract and macros). A line is left to parse() when its RecordType is absent or has
-- no timestamp field, its time is naive (US Eastern) or not plain ISO 8601, a field has
-- a type parse() would stringify, its From is not a plain address, or it has duplicate
-- keys. The classes below mirror RECORD_TYPES, BOUNCE_TYPES and SUBSCRIPTION_CHANGES; the
-- parity test (tests/adapters/test_bulk_events.py) runs every key of those maps through
-- both.
with objects as (
    select source_file, provider_account, line_number, payload, claimable_object(payload) as j
    from provider_lines
), fields as materialized (
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
    from objects
    where j is not null
), spelled as (
    select
        *,
        case when json_text(f.MessageID) is null or json_text(f.MessageID) = ''
            then json_extract(payload, '$.MessageId') end as message_id_other
    from fields
), records as (
    select
        source_file, provider_account, line_number, payload, f, keys, message_id_other,
        json_text(f.RecordType) as record,
        case json_text(f.RecordType)
            when 'Delivery' then f.DeliveredAt when 'Bounce' then f.BouncedAt
            when 'SpamComplaint' then f.BouncedAt when 'Open' then f.ReceivedAt
            when 'Click' then f.ReceivedAt when 'SubscriptionChange' then f.ChangedAt
        end as when_fragment,
        coalesce(nullif(json_text(f.MessageID), ''), nullif(json_text(message_id_other), ''))
            as message_id,
        coalesce(nullif(json_text(f.Recipient), ''), nullif(json_text(f.Email), '')) as recipient,
        json_text(f."From") as sender,
        case when left(f.Metadata, 1) = '{' then from_json(f.Metadata, '{
            "mailers_message_key": "JSON", "mailers_workspace": "JSON",
            "mailers_stream": "JSON", "mailers_campaign": "JSON", "mailers_domain": "JSON"
        }') end as m
    from spelled
    where left(f.RecordType, 1) = '"'
        and text_typed(f.Type) and text_typed(f.MessageID) and text_typed(message_id_other)
        and text_typed(f.Recipient) and text_typed(f.Email) and text_typed(f.Name)
        and text_typed(f.Details) and text_typed(f.Description)
        and text_typed(f.SuppressionReason) and text_typed(f.Origin)
        and text_typed(f.OriginalLink) and text_typed(f."From")
        and (f.ID is null or json_kind(f.ID) in ('VARCHAR', 'INTEGER'))
        and (f.SuppressSending is null or json_kind(f.SuppressSending) = 'BOOLEAN')
), checked as (
    select *, json_text(when_fragment) as raw_when
    from records
    where left(when_fragment, 1) = '"'
        and unique_keys(keys) and keys_unique(f.Metadata)
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
        iso_instant(raw_when) as occurred_at,
        json_text(f.Type) as bounce_type,
        json_text(f.SuppressionReason) as suppression_reason,
        f.SuppressSending = 'true' as suppress_sending
    from checked
), typed as (
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
                when suppress_sending is not true then 'unknown'
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
            when record = 'SubscriptionChange' and suppress_sending
                and suppression_reason = 'HardBounce' then 'hard'
        end as bounce_class,
        json_text(f.ID) as bounce_id,
        json_text(f.OriginalLink) as link
    from classified
    where occurred_at is not null
)
select
    source_file,
    line_number,
    case
        -- parse(): a Bounce ID that is a non-empty string or a non-zero integer
        when record in ('Bounce', 'SpamComplaint') and coalesce(bounce_id, '') not in ('', '0')
            or (record in ('Bounce', 'SpamComplaint') and bounce_id = '0' and left(f.ID, 1) = '"')
            then 'postmark:bounce:' || bounce_id
        -- concat_ws skips the nulls: a click's link and a subscription change's
        -- SuppressSending are parts of those records' ids only
        else derived_event_id('postmark', concat_ws(chr(31),
            record, coalesce(message_id, ''), coalesce(recipient, ''), raw_when,
            case when record = 'Click' then coalesce(link, '') end,
            case when record = 'SubscriptionChange' then
                case f.SuppressSending when 'true' then 'True' when 'false' then 'False'
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
            nullif(concat_ws(': ', nullif(py_strip(coalesce(json_text(f.Name), '')), ''),
                nullif(py_strip(coalesce(json_text(f.Details), '')), '')), ''),
            coalesce(json_text(f.Description), '')
        ), 1, 1000), '')
        when record = 'SubscriptionChange'
            and (coalesce(suppression_reason, '') <> '' or coalesce(json_text(f.Origin), '') <> '')
            then coalesce(nullif(suppression_reason, ''), 'reactivated')
                || ' (origin: ' || coalesce(nullif(json_text(f.Origin), ''), 'unknown') || ')'
    end as reason,
    case when record = 'Click' then nullif(link, '') end as url,
    payload as raw_payload
from typed
