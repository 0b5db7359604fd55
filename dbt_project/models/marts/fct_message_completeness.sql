{%- set dimensions = ['day', 'workspace', 'provider', 'provider_account'] -%}

with

messages as (

    select * from {{ ref('int_message_completeness') }}

),

daily as (

    select
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        count(*) as messages,
        count(case when ledger_status = 'accepted' then 1 end) as accepted,
        count(case when ledger_status = 'unknown' then 1 end) as unknown,
        count(case when completeness = 'final' then 1 end) as with_final_event,
        count(case when is_settled_by_event then 1 end) as settled_unknown,
        count(case when completeness = 'pending' then 1 end) as pending,
        count(case when completeness = 'overdue' then 1 end) as overdue,
        min(case when completeness = 'overdue' then sent_at end) as first_overdue_sent_at,
        max(case when completeness = 'overdue' then sent_at end) as last_overdue_sent_at

    from messages
    group by
        {%- for dimension in dimensions %}
        {{ dimension }}{% if not loop.last %},{% endif %}
        {%- endfor %}

),

final as (

    select
        {{ surrogate_key(dimensions) }} as completeness_key,
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        messages,
        accepted,
        unknown,
        with_final_event,
        settled_unknown,
        pending,
        overdue,
        first_overdue_sent_at,
        last_overdue_sent_at,
        {{ safe_divide('with_final_event', 'messages') }} as completeness_rate,
        {{ completeness_now() }} as evaluated_at

    from daily

)

select * from final
