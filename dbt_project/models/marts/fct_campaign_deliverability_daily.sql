{#- Every count is of distinct messages of one cohort (send day and routing), so rows add up
    over any dimension and any rate is sum(numerator) / sum(denominator). -#}
{%- set dimensions = ['day', 'workspace', 'stream', 'campaign', 'provider', 'provider_account', 'sending_domain'] -%}

with

messages as (

    select * from {{ ref('fct_messages') }}

),

cohorts as (

    select
        -- the day the provider accepted the message, else the day of its latest ledger row
        cast(coalesce(accepted_at, last_recorded_at) as date) as day,
        workspace,
        stream,
        campaign,
        provider,
        provider_account,
        sending_domain,
        ledger_status,
        -- handed over: accepted, or in doubt (unknown) until a provider event proves it went out
        ledger_status = 'accepted' or (ledger_status = 'unknown' and delivery_status is not null) as is_sent,
        is_delivered,
        is_bounced,
        bounce_class,
        is_complained,
        is_opened,
        is_clicked,
        is_unsubscribed

    from messages

),

daily as (

    select
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        count(*) as messages,
        count(case when ledger_status = 'skipped' then 1 end) as skipped,
        count(case when ledger_status = 'render_failed' then 1 end) as render_failed,
        count(case when ledger_status in ('deferred', 'paused') then 1 end) as held,
        count(case when ledger_status = 'dispatching' then 1 end) as dispatching,
        count(case when ledger_status = 'not_sent' then 1 end) as not_sent,
        count(case when ledger_status = 'rejected' then 1 end) as rejected,
        count(case when ledger_status = 'unknown' then 1 end) as unknown,
        count(case when ledger_status = 'accepted' then 1 end) as accepted,
        count(case when is_sent then 1 end) as sent,
        count(case when is_sent and is_delivered then 1 end) as delivered,
        count(case when is_sent and is_bounced then 1 end) as bounced,
        count(case when is_sent and is_bounced and bounce_class = 'hard' then 1 end) as hard_bounced,
        count(case when is_sent and is_complained then 1 end) as complained,
        count(case when is_sent and is_delivered and is_complained then 1 end) as delivered_complained,
        count(case when is_sent and is_delivered and is_opened then 1 end) as delivered_opened,
        count(case when is_sent and is_delivered and is_clicked then 1 end) as delivered_clicked,
        count(case when is_sent and is_delivered and is_unsubscribed then 1 end) as delivered_unsubscribed,
        count(case when is_sent and is_opened then 1 end) as opened,
        count(case when is_sent and is_clicked then 1 end) as clicked,
        count(case when is_sent and is_unsubscribed then 1 end) as unsubscribed

    from cohorts
    group by
        {%- for dimension in dimensions %}
        {{ dimension }}{% if not loop.last %},{% endif %}
        {%- endfor %}

),

final as (

    select
        {{ surrogate_key(dimensions) }} as cohort_key,
        {{ surrogate_key(['workspace', 'campaign']) }} as campaign_key,
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        messages,
        skipped,
        render_failed,
        held,
        dispatching,
        not_sent,
        rejected,
        unknown,
        accepted,
        sent,
        delivered,
        bounced,
        hard_bounced,
        bounced - hard_bounced as soft_bounced,
        complained,
        delivered_complained,
        opened,
        clicked,
        unsubscribed,
        delivered_opened,
        delivered_clicked,
        delivered_unsubscribed,
        {{ safe_divide('delivered', 'sent') }} as delivery_rate,
        {{ safe_divide('bounced', 'sent') }} as bounce_rate,
        {{ safe_divide('delivered_complained', 'delivered') }} as complaint_rate,
        {{ safe_divide('delivered_opened', 'delivered') }} as open_rate,
        {{ safe_divide('delivered_clicked', 'delivered') }} as click_rate

    from daily

)

select * from final
