with

source as (

    select * from {{ source('mailers', 'audit_log') }}

),

renamed as (

    select
        audit_id,
        recorded_at,
        run_id,
        actor,
        action,
        workspace,
        stream,
        campaign,
        send_window,
        config_hash,
        {%- for key in audit_count_keys() %}
        coalesce({{ json_extract_int('counts', key) }}, 0) as {{ key }},
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

    from source

)

select * from renamed
