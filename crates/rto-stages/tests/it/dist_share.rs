//! How work is shared among ranks (`dist::share`): contiguous blocks that, in rank order, are
//! the items in their original order, rank 0 first to get work.

use rto_stages::dist::share;

#[test]
fn blocks_cover_the_items_in_order_with_the_remainder_on_the_first_ranks() {
    // By hand: 7 items over 3 ranks → 3, 2, 2; 1 item over 2 ranks → rank 0 only.
    assert_eq!([0, 1, 2].map(|r| share(7, r, 3)), [0..3, 3..5, 5..7]);
    assert_eq!([0, 1].map(|r| share(1, r, 2)), [0..1, 1..1]);
    assert_eq!([0, 1].map(|r| share(4, r, 2)), [0..2, 2..4]);
    assert_eq!(share(5, 0, 1), 0..5);
    assert_eq!([0, 1, 2].map(|r| share(0, r, 3)), [0..0, 0..0, 0..0]);
}
