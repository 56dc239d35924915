"""The asyncio peer layer: BOLT #1 / BOLT #7 messages on the wire
(:mod:`lngossip.net.messages`) and the node with its connection lifecycle
(:mod:`lngossip.net.node`), which serves its pipeline's graph."""
