"""Thin HTTP handlers, one module per OpenAPI tag, and what they share.

Each operation's `operationId` (the contract's camelCase name) plus its
`x-openapi-router-controller` names the function here: `listSubscriptions` on
`handlers.subscriptions` is `handlers.subscriptions.list_subscriptions`. A handler takes the
validated input Connexion injects, calls one domain function, and returns a ready Starlette
`Response` (`representations.Reply`, built by `representations.reply(body, status)`), which
Connexion sends as it is. Errors are raised (claims_realtime.models.errors), never returned:
claims_realtime.http turns them into `application/problem+json`.

Shared: `app_state` (what handlers read from the lifespan state), `representations` and
`fallback_representations` (the wire shapes), `problems` (problem+json bodies built outside
Connexion, every 405) and `metrics` (the `/metrics` route, which also times each request's
arrival).
"""
