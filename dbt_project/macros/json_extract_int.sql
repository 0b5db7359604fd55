{#- One top-level key of a JSON object held as text, as an integer; null when the key is
    missing or its value is not an integer (never an error). -#}
{% macro json_extract_int(json_text, key) -%}
    {{ return(adapter.dispatch('json_extract_int', 'mailers')(json_text, key)) }}
{%- endmacro %}

{#- Redshift-style: json_extract_path_text takes text there. -#}
{% macro default__json_extract_int(json_text, key) -%}
    cast(json_extract_path_text({{ json_text }}, '{{ key }}') as {{ dbt.type_bigint() }})
{%- endmacro %}

{#- https://duckdb.org/docs/stable/data/json/json_functions -#}
{% macro duckdb__json_extract_int(json_text, key) -%}
    try_cast(json_extract_string({{ json_text }}, '$.{{ key }}') as bigint)
{%- endmacro %}

{#- https://docs.snowflake.com/en/sql-reference/functions/json_extract_path_text (takes and
    returns VARCHAR) and https://docs.snowflake.com/en/sql-reference/functions/try_cast -#}
{% macro snowflake__json_extract_int(json_text, key) -%}
    try_cast(json_extract_path_text({{ json_text }}, '{{ key }}') as integer)
{%- endmacro %}

{#- https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions#json_value
    (STRING or JSON in, STRING out; null for a missing key) and safe_cast -#}
{% macro bigquery__json_extract_int(json_text, key) -%}
    safe_cast(json_value({{ json_text }}, '$.{{ key }}') as int64)
{%- endmacro %}

{#- https://www.postgresql.org/docs/current/functions-json.html: ->> gives the field as text
    (null when missing or not an object). Postgres has no try_cast, so the text is checked
    to be an integer that fits a bigint before the cast. -#}
{% macro postgres__json_extract_int(json_text, key) -%}
    case
        when (cast({{ json_text }} as jsonb) ->> '{{ key }}') ~ '^-?[0-9]{1,18}$'
        then cast(cast({{ json_text }} as jsonb) ->> '{{ key }}' as bigint)
    end
{%- endmacro %}
