"""Thin HTTP handlers, one module per OpenAPI tag.

Each operation's `operationId` (the contract's camelCase name) plus its
`x-openapi-router-controller` names the function here: `listSubscriptions` on
`handlers.subscriptions` is `handlers.subscriptions.list_subscriptions`. A handler takes the
validated input Connexion injects, calls one domain function, and returns a Starlette
`Response`, built by `handlers.representations.reply(body, status)`.
"""
