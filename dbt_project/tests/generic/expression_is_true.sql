{# Rows where `expression` is false fail the test; a null result passes (columns are null while a window fills). #}
{% test expression_is_true(model, expression, column_name=None) %}
    select * from {{ model }} where not ({{ expression }})
{% endtest %}
