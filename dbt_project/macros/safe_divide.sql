{#- Null, not an error, when the denominator is 0; always double precision. -#}
{% macro safe_divide(numerator, denominator) -%}
    {{ return(adapter.dispatch('safe_divide', 'mailers')(numerator, denominator)) }}
{%- endmacro %}

{#- Snowflake too: its FLOAT (dbt.type_float()) is double precision, and its DIV0NULL
    yields 0 rather than null for a zero denominator. -#}
{% macro default__safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as {{ dbt.type_float() }}) / nullif({{ denominator }}, 0))
{%- endmacro %}

{#- dbt's float type is a 4-byte real on DuckDB -#}
{% macro duckdb__safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as double) / nullif({{ denominator }}, 0))
{%- endmacro %}

{#- https://cloud.google.com/bigquery/docs/reference/standard-sql/mathematical_functions#safe_divide -#}
{% macro bigquery__safe_divide(numerator, denominator) -%}
    safe_divide({{ numerator }}, {{ denominator }})
{%- endmacro %}

{#- an integer division on Postgres truncates, so the numerator is cast first -#}
{% macro postgres__safe_divide(numerator, denominator) -%}
    (cast({{ numerator }} as double precision) / nullif({{ denominator }}, 0))
{%- endmacro %}
