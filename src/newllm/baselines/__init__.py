"""What CVFP is judged against: smoothed n-gram models and a same-size transformer."""
