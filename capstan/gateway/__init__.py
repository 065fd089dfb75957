"""A TRTC-compatible API gateway in front of Capstan: code written for Tencent's TRTC cloud APIs
(CreateCloudRecording ..., StartStreamIngest ..., StartWebRecord ..., and the SCF functions' bodies)
runs against Capstan by changing only the endpoint. See docs/trtc-gateway.md.

Pure parts (no I/O): tc3 and appauth (signatures), fields and mapping and scf (requests -> specs,
status -> answers), errors (envelope and codes), config, ratelimit. Adapters: http (aiohttp), kube
(the API server). service sequences them.
"""
