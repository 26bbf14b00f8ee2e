"""The API gateway (RIG §7): route table, reverse proxy, Kafka target, correlated responses.

Modules:

- ``routes``: API definitions, validation, matching (pure, standard library only);
- ``forward``: target ``http``, streaming, connection pools;
- ``kafka_target``: target ``kafka``;
- ``responses``: correlation ids, ``response_from: kafka|http_async``;
- ``request_log``: ``REQUEST_LOG``;
- ``sync``: route replication over the control channel;
- ``service``: :class:`~rig_actors.proxy.service.ProxyService`, what the gateway holds.

Nothing is imported here, so that ``routes`` can be used without the rest.
"""
