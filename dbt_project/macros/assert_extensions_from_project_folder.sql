{# Fails the run if DuckDB loaded ducklake from anywhere but CRYPTOFLOW_DBT_EXTENSION_DIR: a machine where someone once
   installed extensions by hand in ~/.duckdb must not hide a missing install step from CI. #}
{% macro assert_extensions_from_project_folder() %}
    {%- set folder = env_var('CRYPTOFLOW_DBT_EXTENSION_DIR') | replace("'", "''") -%}
    select case
        when not exists (
            select 1 from duckdb_extensions()
            where extension_name = 'ducklake' and loaded and starts_with(install_path, '{{ folder }}')
        )
        then error('ducklake was not loaded from {{ folder }}: ' || coalesce(
            (select install_path from duckdb_extensions() where extension_name = 'ducklake'), 'not loaded'))
    end
{% endmacro %}
