"""The review station: a small web application for manual handling (`digitize review serve`)."""
