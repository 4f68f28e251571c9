"""The BIDS App's container entry (:mod:`bids_app.run`) and its Boutiques descriptor (``descriptor.json``)."""
