"""The conversion script from seed 002 (PAI intent-detection solution), kept as written for the benchmark.

Only the two hard-coded paths became command-line arguments: `python seed002_convert.py MANIFEST OUT_JSON`.
It loads every converted pair into one list, takes the first `label-*` key it meets (the machine pre-label when
that key comes first), prints and drops lines it cannot convert, and dumps the list with `json.dump` at the end.
"""

import json
import sys

# 輸入檔案路徑和輸出檔案路徑
input_file_path = sys.argv[1]
output_file_path = sys.argv[2]

converted_data = []

with open(input_file_path, "r", encoding="utf-8") as file:  # noqa: UP015
    for line in file:
        try:
            # 解析每一行的JSON資料
            data = json.loads(line)

            # 提取instruction
            instruction = data["data"]["instruction"]

            # 遍曆所有以 "label-" 開頭的鍵
            for key in data.keys():  # noqa: SIM118
                if key.startswith("label-"):
                    # 提取MarkResult並解析其內容
                    mark_result_str = data[key]["results"][0]["MarkResult"]
                    mark_result = json.loads(mark_result_str)  # 將 MarkResult 字串解析為 JSON

                    # 提取annotations中的labels["output"]
                    output = mark_result["annotations"][0]["labels"]["output"]

                    # 構建新的資料結構
                    converted_data.append({"instruction": instruction, "output": output})
                    break
        except Exception as e:
            print(f"Error processing line: {line.strip()}. Error: {e}")

# 將轉換後的資料寫入輸出檔案
with open(output_file_path, "w", encoding="utf-8") as outfile:
    json.dump(converted_data, outfile, ensure_ascii=False, indent=4)

print(f"Conversion completed. Output saved to {output_file_path}")
