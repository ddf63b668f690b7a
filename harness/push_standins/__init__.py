"""Local stand-ins for FCM and APNs: for the tests, the simulator's push scenario and the push benchmark.

* :class:`harness.push_standins.fcm.FcmStandIn`: FCM HTTP v1 over plain HTTP/1.1, with the OAuth 2.0
  token endpoint (JWT-bearer grant, RS256 assertion checked against the service account's key).
* :class:`harness.push_standins.apns.ApnsStandIn`: APNs over HTTP/2 and TLS (self-signed certificate),
  checking the ES256 provider token (``kid``, ``iss``, signature).

Both listen on free loopback ports, record what they receive, and answer per device token from a
script (:class:`harness.push_standins.common.Reply`): success by default, or any error class on
demand, including ``Retry-After``, an empty error body and no answer at all. The real pyfcm and
aioapns clients talk to them.
"""
