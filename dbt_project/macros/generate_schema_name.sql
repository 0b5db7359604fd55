{#- The Python side reads fixed relations such as segments.seg_x and marts.fct_x, so a
    custom schema is used verbatim instead of being prefixed with the target schema, save
    that a config which renames schemas (BigQuery's `dataset_prefix` and `datasets`) has
    Mailers pass the renaming here, so dbt builds where Mailers reads:
    MAILERS_DBT_SCHEMAS, a JSON object of schema -> name, and MAILERS_DBT_SCHEMA_PREFIX for
    every other schema. sources.yml applies the same to the sources' schemas. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {%- set schema = custom_schema_name | trim -%}
        {%- set renamed = fromjson(env_var('MAILERS_DBT_SCHEMAS', '{}')) -%}
        {{ renamed.get(schema, env_var('MAILERS_DBT_SCHEMA_PREFIX', '') ~ schema) }}
    {%- endif -%}
{%- endmacro %}
