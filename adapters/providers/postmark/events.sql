-- Postmark webhook records as canonical events, set-based: the mapping of events.py's
-- parse() for the records it can map exactly (see adapters/bulk_events.py for the
-- contract and macros). A line is left to parse() when its RecordType is absent or has
-- no timestamp field, its time is naive (US Eastern) or not plain ISO 8601, a field has
-- a type parse() would stringify, its From is not a plain address, or it has duplicate
-- keys. The classes below mirror RECORD_TYPES, BOUNCE_TYPES and SUBSCRIPTION_CHANGES; the
-- parity test (tests/core/test_bulk_parse.py) runs every key of those maps through both.
with objects as (
    select source_file, provider_account, line_number, payload, claimable_object(payload) as j
    from provider_lines
), fields as materialized (
    select
        source_file, provider_account, line_number, payload,
        json_extract_string(j, [
            '$.RecordType', '$.Type', '$.MessageID', '$.MessageId', '$.Recipient', '$.Email',
            '$.DeliveredAt', '$.BouncedAt', '$.ReceivedAt', '$.ChangedAt', '$.ID', '$.Name',
            '$.Details', '$.Description', '$.SuppressionReason', '$.Origin', '$.OriginalLink',
            '$.From', '$.SuppressSending', '$.Metadata.mailers_message_key',
            '$.Metadata.mailers_workspace', '$.Metadata.mailers_stream',
            '$.Metadata.mailers_campaign', '$.Metadata.mailers_domain', '$.Metadata'
        ]) as v,
        json_type(j, [
            '$.RecordType', '$.Type', '$.MessageID', '$.MessageId', '$.Recipient', '$.Email',
            '$.DeliveredAt', '$.BouncedAt', '$.ReceivedAt', '$.ChangedAt', '$.ID', '$.Name',
            '$.Details', '$.Description', '$.SuppressionReason', '$.Origin', '$.OriginalLink',
            '$.From', '$.SuppressSending', '$.Metadata.mailers_message_key',
            '$.Metadata.mailers_workspace', '$.Metadata.mailers_stream',
            '$.Metadata.mailers_campaign', '$.Metadata.mailers_domain', '$.Metadata'
        ]) as t
    from objects
    where j is not null
), records as (
    select
        source_file, provider_account, line_number, payload, v, t,
        v[1] as record,
        case v[1]
            when 'Delivery' then 7 when 'Bounce' then 8 when 'SpamComplaint' then 8
            when 'Open' then 9 when 'Click' then 9 when 'SubscriptionChange' then 10
        end as when_at,
        coalesce(nullif(v[3], ''), nullif(v[4], '')) as message_id,
        coalesce(nullif(v[5], ''), nullif(v[6], '')) as recipient
    from fields
    where t[1] = 'VARCHAR'
        and text_typed(t[2]) and text_typed(t[3]) and text_typed(t[4]) and text_typed(t[5])
        and text_typed(t[6]) and text_typed(t[12]) and text_typed(t[13]) and text_typed(t[14])
        and text_typed(t[15]) and text_typed(t[16]) and text_typed(t[17]) and text_typed(t[18])
        and text_typed(t[24])
        and ref_typed(t[20]) and ref_typed(t[21]) and ref_typed(t[22]) and ref_typed(t[23])
        and (t[11] is null or t[11] in ('NULL', 'VARCHAR', 'BIGINT', 'UBIGINT'))
        and (t[19] is null or t[19] in ('NULL', 'BOOLEAN'))
        and keys_unique(v[25], t[25])
        and (
            coalesce(v[18], '') = ''
            or regexp_full_match(v[18], '[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*')
            or regexp_full_match(v[18], '[A-Za-z0-9]+( [A-Za-z0-9]+)* <[A-Za-z0-9_%+-]+([.][A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+([.][A-Za-z0-9-]+)*>')
        )
), timed as (
    select *, v[when_at] as raw_when, iso_instant(v[when_at]) as occurred_at
    from records
    where when_at is not null and t[when_at] = 'VARCHAR'
), classified as (
    select
        *,
        case
            when record = 'Bounce' then case coalesce(v[2], '')
                when 'HardBounce' then 'bounced' when 'BadEmailAddress' then 'bounced'
                when 'ManuallyDeactivated' then 'bounced' when 'SoftBounce' then 'bounced'
                when 'DnsError' then 'bounced' when 'SpamNotification' then 'bounced'
                when 'Blocked' then 'bounced' when 'DMARCPolicy' then 'bounced'
                when 'Unknown' then 'bounced' when 'Transient' then 'deferred'
                when 'SpamComplaint' then 'complained' when 'Unsubscribe' then 'unsubscribed'
                when 'SMTPApiError' then 'failed' when 'TemplateRenderingFailed' then 'failed'
                when 'Unconfirmed' then 'failed' else 'unknown' end
            when record = 'SubscriptionChange' then case
                when v[19] is distinct from 'true' then 'unknown'
                else case coalesce(v[15], '')
                    when 'ManualSuppression' then 'unsubscribed'
                    when 'SpamComplaint' then 'complained'
                    when 'HardBounce' then 'bounced' else 'unknown' end end
            when record = 'Delivery' then 'delivered' when record = 'SpamComplaint' then 'complained'
            when record = 'Open' then 'opened' when record = 'Click' then 'clicked'
        end as event_type,
        case
            when record = 'Bounce' and coalesce(v[2], '') in (
                'HardBounce', 'BadEmailAddress', 'ManuallyDeactivated') then 'hard'
            when record = 'Bounce' and coalesce(v[2], '') in (
                'SoftBounce', 'DnsError', 'SpamNotification', 'Blocked', 'DMARCPolicy', 'Unknown'
            ) then 'soft'
            when record = 'SubscriptionChange' and v[19] = 'true' and v[15] = 'HardBounce' then 'hard'
        end as bounce_class
    from timed
    where occurred_at is not null
)
select
    source_file,
    line_number,
    case
        when record in ('Bounce', 'SpamComplaint')
            and ((t[11] = 'VARCHAR' and v[11] <> '') or (t[11] in ('BIGINT', 'UBIGINT') and v[11] <> '0'))
            then 'postmark:bounce:' || v[11]
        -- concat_ws skips the nulls: a click's link and a subscription change's
        -- SuppressSending are parts of those records' ids only
        else derived_event_id('postmark', concat_ws(chr(31),
            record, coalesce(message_id, ''), coalesce(recipient, ''), raw_when,
            case when record = 'Click' then coalesce(v[17], '') end,
            case when record = 'SubscriptionChange' then
                case v[19] when 'true' then 'True' when 'false' then 'False' else 'None' end
            end))
    end as event_id,
    event_type,
    bounce_class,
    occurred_at,
    'postmark' as provider,
    provider_account,
    message_id as provider_message_id,
    ref_text(v[20], t[20]) as message_key,
    ref_text(v[21], t[21]) as workspace,
    ref_text(v[22], t[22]) as stream,
    ref_text(v[23], t[23]) as campaign,
    recipient,
    coalesce(
        nullif(v[24], ''),
        nullif(lower(trim(regexp_extract(v[18], '@([^@>]*)>?$', 1))), '')
    ) as sending_domain,
    case
        when record in ('Bounce', 'SpamComplaint') then nullif(substring(coalesce(
            nullif(concat_ws(': ', nullif(py_strip(coalesce(v[12], '')), ''),
                nullif(py_strip(coalesce(v[13], '')), '')), ''),
            coalesce(v[14], '')
        ), 1, 1000), '')
        when record = 'SubscriptionChange' and (coalesce(v[15], '') <> '' or coalesce(v[16], '') <> '')
            then coalesce(nullif(v[15], ''), 'reactivated')
                || ' (origin: ' || coalesce(nullif(v[16], ''), 'unknown') || ')'
    end as reason,
    case when record = 'Click' then nullif(v[17], '') end as url,
    payload as raw_payload
from classified
