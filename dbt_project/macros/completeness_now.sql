{#- The instant completeness is evaluated at: the completeness_now var (naive UTC) Mailers
    passes on every build, else the build's own time. -#}
{% macro completeness_now() -%}
    {%- if var('completeness_now', none) -%}
        cast('{{ var("completeness_now") }}' as {{ dbt.type_timestamp() }})
    {%- else -%}
        cast({{ dbt.current_timestamp() }} as {{ dbt.type_timestamp() }})
    {%- endif -%}
{%- endmacro %}
