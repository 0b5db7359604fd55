{#- Mailers passes both vars (mailers.completeness.dbt_vars); by hand, now is the build's time. -#}
{%- set deadline_minutes = (var('completeness_deadline_hours', 72) * 60) | int -%}
{%- set final_event_types = ['delivered', 'bounced', 'rejected', 'failed', 'complained'] -%}

with

ledger as (

    select * from {{ ref('stg_mailers__send_ledger') }}

),

messages as (

    select * from {{ ref('int_message_ledger_latest') }}

),

email_events as (

    select * from {{ ref('fct_email_events') }}

),

-- when the message left (or may have left): its latest hand-over or acceptance
handed_over as (

    select
        message_key,
        max(recorded_at) as sent_at

    from ledger
    where status in ('dispatching', 'accepted')
    group by message_key

),

final_events as (

    select
        message_key,
        min(occurred_at) as final_event_at

    from email_events
    where message_key is not null
      and event_type in ({% for t in final_event_types %}'{{ t }}'{% if not loop.last %}, {% endif %}{% endfor %})
    group by message_key

),

joined as (

    select
        messages.message_key,
        messages.workspace,
        messages.provider,
        messages.provider_account,
        messages.ledger_status,
        coalesce(handed_over.sent_at, messages.last_recorded_at) as sent_at,
        final_events.final_event_at

    from messages
    left join handed_over
        on messages.message_key = handed_over.message_key
    left join final_events
        on messages.message_key = final_events.message_key
    where messages.ledger_status in ('accepted', 'unknown')

),

final as (

    select
        message_key,
        workspace,
        provider,
        provider_account,
        ledger_status,
        sent_at,
        cast(sent_at as date) as day,
        {{ dbt.dateadd('minute', deadline_minutes, 'sent_at') }} as due_at,
        final_event_at,
        case
            when final_event_at is not null then 'final'
            when {{ dbt.dateadd('minute', deadline_minutes, 'sent_at') }} <= {{ completeness_now() }} then 'overdue'
            else 'pending'
        end as completeness,
        ledger_status = 'unknown' and final_event_at is not null as is_settled_by_event

    from joined

)

select * from final
