with

audit_log as (

    select * from {{ ref('stg_mailers__audit_log') }}

),

final as (

    select
        audit_id,
        recorded_at,
        cast(recorded_at as date) as recorded_date,
        run_id,
        actor,
        action,
        workspace,
        stream,
        campaign,
        send_window,
        config_hash,
        {%- for key in audit_count_keys() %}
        {{ key }},
        {%- endfor %}
        counts,
        detail,
        scope,
        reason,
        before,
        after,
        seq,
        prev_hash,
        row_hash

    from audit_log

)

select * from final
