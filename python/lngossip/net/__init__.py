"""The asyncio peer layer: BOLT #1 / BOLT #7 messages on the wire
(:mod:`lngossip.net.messages`) and the gossip node
(:class:`lngossip.net.node.GossipNode`), which serves its pipeline's graph:
its connection lifecycle in :mod:`lngossip.net.node`, one module per role
beside it (:mod:`~lngossip.net.query`, :mod:`~lngossip.net.responder`,
:mod:`~lngossip.net.relay`, :mod:`~lngossip.net.processing`)."""
