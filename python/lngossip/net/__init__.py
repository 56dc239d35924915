"""The asyncio peer layer: BOLT #1 / BOLT #7 messages on the wire
(:mod:`lngossip.net.messages`), the accepted-graph store that answers
queries (:mod:`lngossip.net.store`), and the node with its connection
lifecycle (:mod:`lngossip.net.node`)."""
