{% macro json_extract_int(json_text, key) -%}
    {{ return(adapter.dispatch('json_extract_int', 'mailers')(json_text, key)) }}
{%- endmacro %}

{% macro default__json_extract_int(json_text, key) -%}
    cast(json_extract_path_text({{ json_text }}, '{{ key }}') as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro duckdb__json_extract_int(json_text, key) -%}
    try_cast(json_extract_string({{ json_text }}, '$.{{ key }}') as bigint)
{%- endmacro %}

{% macro snowflake__json_extract_int(json_text, key) -%}
    try_cast(json_extract_path_text({{ json_text }}, '{{ key }}') as integer)
{%- endmacro %}

{% macro bigquery__json_extract_int(json_text, key) -%}
    safe_cast(json_value({{ json_text }}, '$.{{ key }}') as int64)
{%- endmacro %}
