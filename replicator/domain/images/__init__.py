"""What an image is: references, media types, manifests and their referrers."""
