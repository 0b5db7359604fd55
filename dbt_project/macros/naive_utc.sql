{#- Mailers stores instants as naive UTC timestamps (TIMESTAMP on DuckDB and Postgres,
    TIMESTAMP_NTZ on Snowflake) and on BigQuery as TIMESTAMP, an absolute instant (what
    adapters/warehouses/bigquery.py creates; BigQuery refuses to compare a DATETIME with
    it). These two macros produce values of that same type, so comparisons with the stored
    columns never mix types. -#}

{#- Text such as '2024-05-01 09:00:00' (or with fractional seconds) as a naive UTC timestamp. -#}
{% macro parse_naive_timestamp(text_sql) -%}
    {{ return(adapter.dispatch('parse_naive_timestamp', 'mailers')(text_sql)) }}
{%- endmacro %}

{% macro default__parse_naive_timestamp(text_sql) -%}
    cast({{ text_sql }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro duckdb__parse_naive_timestamp(text_sql) -%}
    cast({{ text_sql }} as timestamp)
{%- endmacro %}

{#- https://docs.snowflake.com/en/sql-reference/functions/to_timestamp -#}
{% macro snowflake__parse_naive_timestamp(text_sql) -%}
    to_timestamp_ntz({{ text_sql }})
{%- endmacro %}

{#- A string without a time zone is read as UTC:
    https://cloud.google.com/bigquery/docs/reference/standard-sql/timestamp_functions#timestamp -#}
{% macro bigquery__parse_naive_timestamp(text_sql) -%}
    timestamp({{ text_sql }})
{%- endmacro %}

{#- timestamp is timestamp without time zone on Postgres -#}
{% macro postgres__parse_naive_timestamp(text_sql) -%}
    cast({{ text_sql }} as timestamp)
{%- endmacro %}

{#- The current instant as a naive UTC timestamp, whatever the session's time zone. -#}
{% macro naive_utc_now() -%}
    {{ return(adapter.dispatch('naive_utc_now', 'mailers')()) }}
{%- endmacro %}

{% macro default__naive_utc_now() -%}
    cast({{ dbt.current_timestamp() }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{#- timestamptz AT TIME ZONE gives the wall clock there as a naive timestamp:
    https://duckdb.org/docs/stable/sql/functions/timestamptz -#}
{% macro duckdb__naive_utc_now() -%}
    (current_timestamp at time zone 'UTC')
{%- endmacro %}

{#- SYSDATE is the current time in UTC as TIMESTAMP_NTZ:
    https://docs.snowflake.com/en/sql-reference/functions/sysdate -#}
{% macro snowflake__naive_utc_now() -%}
    sysdate()
{%- endmacro %}

{#- https://cloud.google.com/bigquery/docs/reference/standard-sql/timestamp_functions#current_timestamp -#}
{% macro bigquery__naive_utc_now() -%}
    current_timestamp()
{%- endmacro %}

{#- https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-ZONECONVERT -#}
{% macro postgres__naive_utc_now() -%}
    (current_timestamp at time zone 'UTC')
{%- endmacro %}
