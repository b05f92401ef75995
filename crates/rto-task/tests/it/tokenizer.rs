//! The task tokenizer: lossless on task text, ids inside the vocabulary, and transformers
//! (the peer users load our folders with) agrees on the file, the chat template and the ids.

use crate::common;

use rto_task::vocab::vocab;
use rto_task::{build_tokenizer, chat_prompt, CHAT_TEMPLATE};

fn encode(text: &str) -> Vec<u32> {
    build_tokenizer().encode(text, false).unwrap().get_ids().to_vec()
}

#[test]
fn task_text_round_trips_and_ids_stay_in_the_vocabulary() {
    let tok = build_tokenizer();
    let n = vocab().len() as u32;
    assert_eq!(tok.get_vocab_size(true), n as usize);
    for (t, id) in [("<pad>", 0), ("<s>", 1), ("</s>", 2), ("<unk>", 3)] {
        assert_eq!(tok.token_to_id(t), Some(id), "{t}");
    }
    let rows = common::read_jsonl("sft.jsonl");
    let mut texts: Vec<String> = rows.iter().map(|r| r["response"].as_str().unwrap().to_string()).collect();
    texts.extend(rows.iter().map(|r| r["prompt"].as_str().unwrap().to_string()));
    texts.extend(common::prompts("eval_prompts.jsonl"));
    for text in &texts {
        let ids = encode(text);
        assert_eq!(ids.len(), text.split_whitespace().count(), "one token per word: {text}");
        assert!(ids.iter().all(|&id| id < n && id != 3), "no <unk> and in range: {text}");
        assert_eq!(&tok.decode(&ids, true).unwrap(), text);
    }
    // Words outside the task map to <unk>.
    assert_eq!(encode("whale zebra"), vec![tok.token_to_id("whale").unwrap(), 3]);
}

#[test]
fn chat_prompts_are_short_and_start_with_bos() {
    let tok = build_tokenizer();
    let mut longest = 0;
    for name in ["sft.jsonl", "rl_prompts.jsonl", "eval_prompts.jsonl"] {
        for p in common::prompts(name) {
            let ids = encode(&chat_prompt(&p));
            assert_eq!(ids[..2], [1, tok.token_to_id("<user>").unwrap()]);
            assert_eq!(ids.last().copied(), tok.token_to_id("<assistant>"));
            longest = longest.max(ids.len());
        }
    }
    assert!(longest <= 24, "prompt of {longest} tokens");
}

#[test]
fn minijinja_renders_the_template_as_chat_prompt_does() {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", CHAT_TEMPLATE).unwrap();
    let out = env
        .get_template("chat")
        .unwrap()
        .render(minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => "write 16 words about the ocean" }],
            add_generation_prompt => true,
            bos_token => "<s>",
        })
        .unwrap();
    assert_eq!(out, chat_prompt("write 16 words about the ocean"));
}

#[test]
fn transformers_loads_the_folder_and_agrees() {
    let work = tempfile::tempdir().unwrap();
    let prompt = common::prompts("eval_prompts.jsonl")[0].clone();
    let response = common::read_jsonl("sft.jsonl")[0]["response"].as_str().unwrap().to_string();
    let texts = vec![response.clone(), prompt.clone(), "the zebra".to_string()];
    let input = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "texts": texts,
    });
    let in_path = work.path().join("in.json");
    let out_path = work.path().join("out.json");
    std::fs::write(&in_path, input.to_string()).unwrap();
    let toy = common::toy_dir();
    let paths = [toy.to_str().unwrap(), in_path.to_str().unwrap(), out_path.to_str().unwrap()];
    rto_test_support::python_script("check_tokenizer.py", &paths);
    let theirs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();

    let expected = chat_prompt(&prompt);
    assert_eq!(theirs["chat_text"].as_str().unwrap(), expected);
    let ids: Vec<u32> = serde_json::from_value(theirs["chat_ids"].clone()).unwrap();
    assert_eq!(ids, encode(&expected));
    for (i, text) in texts.iter().enumerate() {
        let their_ids: Vec<u32> = serde_json::from_value(theirs["text_ids"][i].clone()).unwrap();
        assert_eq!(their_ids, encode(text), "{text}");
    }
    assert_eq!(theirs["decoded"][0].as_str().unwrap(), response, "transformers decodes losslessly");
    assert_eq!(theirs["decoded"][2].as_str().unwrap(), "the", "<unk> is special and skipped");
    assert_eq!(theirs["bos_token"], "<s>");
    assert_eq!(theirs["eos_token"], "</s>");
    assert_eq!(theirs["pad_token"], "<pad>");
    assert_eq!((theirs["eos_token_id"].as_u64(), theirs["pad_token_id"].as_u64()), (Some(2), Some(0)));
    assert_eq!(theirs["vocab_size"].as_u64(), Some(vocab().len() as u64));
}
