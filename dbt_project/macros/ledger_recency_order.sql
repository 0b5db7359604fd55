{#- mailers.ledger.recency_order() is the same rule; tests/test_ledger_parity.py holds them to it. -#}
{% macro ledger_recency_order() -%}
    {%- set precedence = ['dispatching', 'render_failed', 'not_sent', 'deferred', 'paused', 'unknown', 'skipped', 'rejected', 'accepted'] -%}
    recorded_at desc,
    case status
        {%- for status in precedence %}
        when '{{ status }}' then {{ loop.index0 }}
        {%- endfor %}
    end desc,
    ledger_id desc
{%- endmacro %}
