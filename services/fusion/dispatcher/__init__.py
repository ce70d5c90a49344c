"""The dispatcher: validates a request, resolves its panel, publishes the plan and one task per member."""
