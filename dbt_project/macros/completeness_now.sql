{#- The instant completeness is evaluated at: the completeness_now var (naive UTC) Mailers
    passes on every build, else the build's own time (in UTC). -#}
{% macro completeness_now() -%}
    {%- if var('completeness_now', none) -%}
        {{ parse_naive_timestamp("'" ~ var('completeness_now') ~ "'") }}
    {%- else -%}
        {{ naive_utc_now() }}
    {%- endif -%}
{%- endmacro %}
